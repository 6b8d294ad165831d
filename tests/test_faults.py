"""Faults and bad input: each ends in one line naming what went wrong and what to do, and
loses nothing a run has written (docs/runs.md, "Faults")."""

import contextlib
import dataclasses
import errno
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tiny import TINY, cli_args, quiet, with_epochs, without_times

from crl import report, runs, sweep
from crl.checkpoint import UNREADABLE_DIR, Checkpoints, _is_damage
from crl.config import ConfigError, validate
from crl.tracking import WandbRun
from crl.train import EXIT_PREEMPTED, EXIT_WRITE_FAILED, main, train

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def files(path: Path) -> dict[Path, bytes]:
    return {f: f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


def copy_run(tiny_run, tmp_path, name="copy") -> Path:
    path = tmp_path / name
    shutil.copytree(tiny_run[3], path)
    return path


# ---------------------------------------------------------------- 1. two processes, one run
HOLD_LOCK = """
import sys, time
from crl.runs import RunLock
with RunLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_live_lock_refuses_a_second_process_naming_the_holder_and_a_dead_ones_is_taken(
        tiny_run, tmp_path):
    path = copy_run(tiny_run, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert runs.lock_holder(path).startswith(f"pid {holder.pid} on {socket.gethostname()}")
        before = files(path)
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "crl.train", "--resume", str(path),
                                 "--num-epochs", "3"], cwd=ROOT, capture_output=True, text=True,
                                timeout=120)
        print(f"second process refused in {time.monotonic() - started:.1f}s")
        assert result.returncode == 2
        errors = [line for line in result.stderr.splitlines() if line.startswith("crl:")]
        assert len(errors) == 1 and f"in use by pid {holder.pid} on" in errors[0], result.stderr
        assert "Traceback" not in result.stderr
        assert files(path) == before
        # A sweep re-run meanwhile skips the live run and deletes nothing.
        assert sweep.run_status(path) == "running"
    finally:
        holder.kill()
        holder.wait()
    # The killed holder's lock file is still there, with its record, but no longer held.
    assert f"pid {holder.pid}" in (path / runs.LOCK_FILE).read_text()
    assert runs.lock_holder(path) is None
    with runs.RunLock(path):
        assert f"pid {os.getpid()}" in (path / runs.LOCK_FILE).read_text()
        with pytest.raises(runs.RunError, match=f"in use by pid {os.getpid()}"):
            runs.RunLock(path).__enter__()
    assert not (path / runs.LOCK_FILE).exists()  # a holder that ends removes it
    assert sweep.run_status(path) == "finished"


def test_a_new_run_refused_under_its_lock_and_a_lock_leaves_no_empty_directory(tmp_path):
    config = validate(dataclasses.replace(TINY, run_dir=str(tmp_path), run_name="new",
                                          render=False))
    path = runs.run_path(config)
    with runs.RunLock(path):
        with pytest.raises(runs.RunError, match="is in use by pid"):
            train(config, log=quiet)
        assert [p.name for p in path.iterdir()] == [runs.LOCK_FILE]
    assert not path.exists()  # the lock made the directory; nothing else used it
    assert train(config, log=quiet)[1][-1]["epoch"] == 2  # once free, the run starts
    assert runs.LOCK_FILE not in [p.name for p in path.iterdir()]


def test_a_sweep_job_resumes_a_run_without_checkpoints_and_never_deletes_it(tiny_run, tmp_path,
                                                                             monkeypatch):
    path = tmp_path / "no_checkpoint"
    path.mkdir()
    shutil.copy(tiny_run[3] / runs.CONFIG_FILE, path / runs.CONFIG_FILE)
    (path / "notes.txt").write_text("kept")
    launched = []

    class Recorder:
        def __init__(self, args, **_):
            launched.append(args)

    monkeypatch.setattr(subprocess, "Popen", Recorder)
    sweep.TrainJob(str(path), ["--env", "point_u_maze"]).start()
    assert launched[0][-2:] == ["--resume", str(path)]
    assert (path / "notes.txt").read_text() == "kept"


# ---------------------------------------------------------------- 2. Ctrl-C
def _stderr_lines(process) -> list[str]:
    """Collect a process's stderr lines as they come (a thread), into the returned list."""
    lines: list[str] = []

    def read():
        for line in process.stderr:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _wait_for(predicate, timeout: float, process) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, "the process ended early"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_ctrl_c_once_checkpoints_and_exits_3_twice_stops_at_once_keeping_the_checkpoint(
        tiny_run, tmp_path):
    config = with_epochs(dataclasses.replace(
        TINY, run_dir=str(tmp_path), run_name="ctrl_c", render=False,
        compile_cache=os.environ["CRL_TEST_COMPILE_CACHE"]), 400)
    path = runs.run_path(config)
    process = subprocess.Popen([sys.executable, "-m", "crl.train", *cli_args(config)], cwd=ROOT,
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    err = _stderr_lines(process)
    _wait_for(lambda: len(runs.read_metrics(path)) >= 2, 300, process)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == EXIT_PREEMPTED
    stopped = runs.read_metrics(path)[-1]["epoch"]
    text = "".join(err)
    assert "Ctrl-C again to stop at once" in text
    assert f"stopped by SIGINT after epoch {stopped}, which is checkpointed" in text
    assert "Traceback" not in text
    assert Checkpoints(path).epochs()[-1] == stopped

    # Resumed, then Ctrl-C twice: the process ends at once, by the signal.
    process = subprocess.Popen([sys.executable, "-m", "crl.train", "--resume", str(path)],
                               cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               text=True)
    err = _stderr_lines(process)
    _wait_for(lambda: any("resuming" in line or "epoch " in line for line in err)
              and runs.read_metrics(path)[-1]["epoch"] > stopped, 300, process)
    process.send_signal(signal.SIGINT)
    _wait_for(lambda: any("Ctrl-C again" in line for line in err), 60, process)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == -signal.SIGINT
    last = Checkpoints(path).epochs()[-1]
    assert last >= stopped
    print(f"\nCtrl-C once: stopped after epoch {stopped}; twice: killed, checkpoint {last} kept")
    # What the killed process left resumes (the epochs after its last checkpoint are redone).
    _, history = train(runs.resume_config(path, ["--num-epochs", str(last + 1)]), log=quiet,
                       resume=True)
    assert [m["epoch"] for m in history] == list(range(last + 2))
    assert without_times(history[:3]) == without_times(tiny_run[2])


# ---------------------------------------------------------------- 3. disk full
@contextlib.contextmanager
def file_size_limit(size: int):
    """Writes past ``size`` bytes of any file fail (EFBIG), as on a full disk, in this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_a_full_disk_never_leaves_a_partial_metrics_line_or_a_half_replaced_config(tmp_path):
    runs.append_metrics(tmp_path, {"epoch": 0, "x": 1.0})
    runs.write_text_atomically(tmp_path / "config.json", "old\n")
    size = (tmp_path / runs.METRICS_FILE).stat().st_size
    with file_size_limit(size + 10):  # room for 10 bytes of the next line, not all of it
        with pytest.raises(runs.WriteError) as error:
            runs.append_metrics(tmp_path, {"epoch": 1, "x": 2.0, "padding": "y" * 100})
        with pytest.raises(runs.WriteError):
            runs.write_text_atomically(tmp_path / "config.json", "new\n" * 1000)
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / runs.METRICS_FILE) in message
    assert "File too large" in message and "iB free there" in message
    assert (tmp_path / runs.METRICS_FILE).read_text() == '{"epoch": 0, "x": 1.0}\n'
    assert (tmp_path / "config.json").read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", runs.METRICS_FILE]


FULL_DISK = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
sys.argv = ["crl.train", *sys.argv[2:]]
runpy.run_module("crl.train", run_name="__main__")
"""


def test_a_checkpoint_that_cannot_be_written_fails_in_one_line_keeping_the_last_one(tiny_run,
                                                                                    tmp_path):
    path = copy_run(tiny_run, tmp_path)
    before = {epoch: files(path / "checkpoints" / str(epoch)) for epoch in (1, 2)}
    biggest = max(f.stat().st_size for f in path.rglob("*") if f.is_file())
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(biggest // 2), "--resume", str(path),
         "--num-epochs", "3", "--compile-cache", ""],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.startswith("crl:")]
    print(f"\n{errors}")
    assert result.returncode == EXIT_WRITE_FAILED, result.stderr[-3000:]
    assert len(errors) == 1 and "cannot write" in errors[0] and "File too large" in errors[0]
    assert "Traceback" not in result.stderr
    assert Checkpoints(path).epochs() == [1, 2]
    assert {epoch: files(path / "checkpoints" / str(epoch)) for epoch in (1, 2)} == before
    assert not list((path / "checkpoints").glob("*tmp*"))
    history = runs.read_metrics(path)  # every line whole
    assert [m["epoch"] for m in history] == [0, 1, 2, 3]
    # With room again, the run resumes from epoch 2 and redoes epoch 3.
    _, history = train(runs.resume_config(path, ["--no-render"]), log=quiet, resume=True)
    assert [m["epoch"] for m in history] == [0, 1, 2, 3]
    assert Checkpoints(path).epochs() == [2, 3]


# ---------------------------------------------------------------- 4. a half-written last line
def test_every_reader_tolerates_a_half_written_last_line_and_names_a_damaged_one(tiny_run,
                                                                                 tmp_path):
    path = copy_run(tiny_run, tmp_path)
    whole = runs.read_metrics(path)
    with open(path / runs.METRICS_FILE, "a") as f:
        f.write('{"epoch": 3, "eval/succ')  # killed mid-write
    assert runs.read_metrics(path) == whole
    assert runs.metrics_until(path, 1) == whole[:2]
    result = report.read_run(path, "eval/success")
    assert result.epoch == 2 and result.status == "finished"
    assert sweep.run_status(path) == "finished"
    assert sweep.TrainJob(str(path), []).wait()["epoch"] == 2
    from crl import viz
    figure = viz.plot_learning_curves([path], ["eval/success"])
    assert len(figure.axes[0].lines) == 1
    # A damaged line before the last is not a write cut short: it is named.
    lines = (path / runs.METRICS_FILE).read_text().splitlines()
    lines[1] = lines[1][:20]
    (path / runs.METRICS_FILE).write_text("\n".join(lines) + "\n")
    with pytest.raises(runs.RunError, match=r"metrics.jsonl line 2 is damaged"):
        runs.read_metrics(path)


# ---------------------------------------------------------------- 5. no checkpoint yet
def test_resuming_a_run_stopped_before_its_first_checkpoint_starts_it_from_scratch(tiny_run,
                                                                                   tmp_path):
    path = tmp_path / "compile_failed"
    path.mkdir()
    shutil.copy(tiny_run[3] / runs.CONFIG_FILE, path / runs.CONFIG_FILE)
    (path / runs.METRICS_FILE).write_text('{"epoch": 0, "eval/success": 0.5}\n')
    with pytest.raises(FileExistsError, match="--resume"):
        train(dataclasses.replace(runs.load_config(path), run_dir=str(tmp_path),
                                  run_name=path.name), log=quiet)
    log = []
    _, history = train(runs.resume_config(path, ["--no-render"]), log=log.append, resume=True)
    assert any("stopped before its first checkpoint: starting it from scratch" in line
               for line in log), log
    assert without_times(history) == without_times(tiny_run[2])
    assert without_times(runs.read_metrics(path)) == without_times(tiny_run[2])


# ---------------------------------------------------------------- 6. a load that fails
@pytest.mark.parametrize("failure", [
    MemoryError(), OSError(errno.ENOMEM, "Cannot allocate memory"),
    RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 1.2GiB"),
    OSError(errno.ETIMEDOUT, "Connection timed out")], ids=repr)
def test_a_checkpoint_that_fails_to_load_for_want_of_memory_is_never_set_aside(
        tiny_run, tmp_path, monkeypatch, failure):
    path = copy_run(tiny_run, tmp_path)
    before = files(path)

    def fail(*_):
        raise ValueError("while restoring item 'buffer'") from failure

    monkeypatch.setattr(Checkpoints, "restore", fail)
    with pytest.raises(runs.RunError) as error:
        train(runs.resume_config(path, ["--num-epochs", "3"]), log=quiet, resume=True)
    message = str(error.value)
    assert "checkpoint 2" in message and "left in place" in message and "\n" not in message
    assert not (path / UNREADABLE_DIR).exists()
    assert files(path) == before


def test_damage_and_want_of_memory_are_told_apart():
    def chained(error, cause):
        error.__cause__ = cause
        return error

    assert _is_damage(ValueError("Failed to decompress: bad magic"))
    assert _is_damage(FileNotFoundError(errno.ENOENT, "No such file: params/manifest.ocdbt"))
    assert _is_damage(OSError(errno.EIO, "Input/output error"))
    assert not _is_damage(chained(ValueError("restore failed"), MemoryError()))
    assert not _is_damage(chained(RuntimeError("x"), OSError(errno.EAGAIN, "again")))


# ---------------------------------------------------------------- 7. W&B failing mid-run
class FailingWandb:
    step = 0

    def __init__(self):
        self.calls = 0

    def log(self, *_, **__):
        self.calls += 1
        raise ConnectionError("wandb.ai unreachable\nretrying")

    def finish(self, **_):
        raise ConnectionError("wandb.ai unreachable")


def test_wandb_failing_mid_run_warns_once_and_stops_being_called(capsys):
    wandb_run = object.__new__(WandbRun)
    wandb_run.run, wandb_run.failed = FailingWandb(), False
    for epoch in range(5):
        wandb_run.log({"epoch": epoch})
    wandb_run.finish(failed=False)
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 1 and "wandb failed (ConnectionError: wandb.ai unreachable)" in \
        warnings[0] and "training goes on" in warnings[0]
    assert wandb_run.run.calls == 1


# ---------------------------------------------------------------- bad input
# (name, command line, what its one line must say). In the command lines {a_file} is an empty
# file and {tmp} a directory; a line that does not start with --resume follows TINY's options.
BAD_INPUTS = [
    ("eval env layout", ["--eval-env", "ant_u_maze"], "eval_env='ant_u_maze' does not fit "
     "the policy of env='point_u_maze'"),
    ("eval env backend", ["--env", "ant", "--eval-env", "arm_reach"],
     "eval_env='arm_reach' cannot run on backend 'spring'"),
    ("discount 1 in float32", ["--discount", "0.99999999"], "is 1.0 in float32"),
    ("discount nan", ["--discount", "nan"], "discount=nan must be a finite number"),
    ("penalty nan", ["--logsumexp-penalty", "nan"], "logsumexp_penalty=nan must be a finite"),
    ("lr inf", ["--actor-lr", "inf"], "actor_lr=inf must be a finite number"),
    ("target entropy -inf", ["--target-entropy", "-inf"], "target_entropy=-inf must be"),
    ("num envs split", ["--num-envs", "9"], "num_envs=9 must divide by the 2 devices"),
    ("batch split", ["--batch-size", "31"], "batch_size=31 must divide by the 2 devices"),
    ("eval envs split", ["--num-eval-envs", "7"], "num_eval_envs=7 must divide by the 2"),
    ("run name empty", ["--run-name", ""], "run_name='' must be one directory name"),
    ("run name separator", ["--run-name", "a/b"], "run_name='a/b' must be one directory"),
    ("run name dotdot", ["--run-name", ".."], "run_name='..' must be one directory name"),
    ("resume maze layout", ["--resume", "{tmp}/resumable", "--maze-layout", "u4_maze"],
     "cannot resume with maze_layout None -> 'u4_maze'"),
    ("resume episode length", ["--resume", "{tmp}/resumable", "--episode-length", "20"],
     "cannot resume with episode_length 25 -> 20"),
    ("preset=", ["--preset=nope"], "preset='nope' is unknown; valid: point_quick"),
    ("preset= parsed", ["--preset=point_quick", "--depth", "6"], "depth=6 must be"),
    ("option typo", ["--widht", "32"], "unknown option --widht; did you mean --width?"),
    ("not an integer", ["--batch-size", "abc"], "Error parsing --batch-size: invalid "
     "literal for int()"),
    ("missing value", ["--depth"], "Missing value for argument '--depth'"),
    ("epochs 0", ["--num-epochs", "0"], "num_epochs=0 must be a positive integer"),
    ("width negative", ["--width", "-32"], "width=-32 must be a positive integer"),
    ("seed negative", ["--seed", "-1"], "seed=-1 must be an integer in [0, 2**31)"),
    ("seed huge", ["--seed", str(2**40)], f"seed={2**40} must be an integer"),
    ("envs huge", ["--num-envs", str(2**40)], "leaves no training step"),
    ("batch huge", ["--batch-size", str(2**20)], "is larger than the 192 transitions"),
    ("run dir a file", ["--run-dir", "{a_file}"], "is a file, not a directory"),
    ("run dir below a file", ["--run-dir", "{a_file}/x"], "is a file, not a dir"),
    ("cache a file", ["--compile-cache", "{a_file}"], "compile_cache="),
    ("layout missing", ["--maze-layout", "{tmp}/none.txt"], "no maze layout"),
    ("resume missing", ["--resume", "{tmp}/none"], "no run at"),
    ("resume a file", ["--resume", "{a_file}"], "no run at"),
    ("resume without value", ["--resume"], "--resume needs a run directory"),
]


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory):
    """Every command line of BAD_INPUTS run by one worker process with 2 CPU devices."""
    tmp_path = tmp_path_factory.mktemp("bad_inputs")
    (tmp_path / "a_file").write_text("")
    resumable = tmp_path / "resumable"
    resumable.mkdir()
    runs.write_config(resumable, validate(dataclasses.replace(
        TINY, run_dir=str(tmp_path), run_name=resumable.name)))
    runs_dir = tmp_path / "runs"
    tiny = cli_args(dataclasses.replace(TINY, run_dir=str(runs_dir)))
    spec = []
    for _, args, _ in BAD_INPUTS:
        args = [arg.format(tmp=tmp_path, a_file=tmp_path / "a_file") for arg in args]
        spec.append({"argv": args if args[0] == "--resume" else tiny + args,
                     "run_dir": str(runs_dir)})
    (tmp_path / "cases.json").write_text(json.dumps(spec))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    subprocess.run([sys.executable, str(TESTS / "workers" / "bad_inputs.py"),
                    str(tmp_path / "cases.json"), str(tmp_path / "results.json")],
                   cwd=ROOT, env=env, check=True, timeout=600)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["control"] == 1, "the worker's listener missed a compilation"
    return {name: result for (name, _, _), result in
            zip(BAD_INPUTS, results["results"], strict=True)}


@pytest.mark.parametrize(("name", "message"), [(name, message) for name, _, message in BAD_INPUTS])
def test_bad_input_exits_in_one_line_before_compiling_writing_nothing(bad_input_results, name,
                                                                      message):
    result = bad_input_results[name]
    errors = [line for line in result["stderr"].splitlines() if line.strip()]
    assert result["code"] == 2, result["stderr"]
    assert len(errors) == 1 and errors[0].startswith("crl: error: "), errors
    assert message in errors[0], errors[0]
    assert not result["written"]
    # Refused before XLA compiled anything: the answer does not wait on the model's size.
    assert result["compilations"] == 0, result["compilations"]


def test_an_unwritable_run_dir_is_refused_in_validation(tmp_path, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path
                        else real_access(p, mode))
    with pytest.raises(ConfigError, match=f"run_dir='{tmp_path}/runs': {tmp_path} is not "
                                          "writable"):
        validate(dataclasses.replace(TINY, run_dir=str(tmp_path / "runs")))


def test_help_gives_every_option_its_own_line_of_help_and_no_section_comment(capsys):
    import ast
    import inspect

    from crl import config as config_module

    tree = ast.parse(inspect.getsource(config_module.Config))
    body = tree.body[0].body
    for at, node in enumerate(body):
        if isinstance(node, ast.AnnAssign):
            following = body[at + 1] if at + 1 < len(body) else None
            assert isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant), \
                f"Config.{node.target.id} has no docstring"
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    captured = capsys.readouterr()
    help_text = captured.out + captured.err
    for section in ("Data and schedule", "Losses and optimisation", "Launch: several"):
        assert section not in help_text
    assert "Envs stepped in parallel" in help_text


def test_every_test_the_faults_table_names_exists():
    text = (ROOT / "docs" / "runs.md").read_text()
    table = text[text.index("## Faults"):].split("\n\n")[2]
    named = re.findall(r"`(?:tests/(\w+\.py)::)?(test_\w+)`", table)
    assert len(named) >= 12
    for module, name in named:
        source = (TESTS / (module or "test_faults.py")).read_text()
        assert f"def {name}(" in source, (module, name)
