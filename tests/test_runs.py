"""Run lifecycle: checkpoints, exact resume, preemption, SIGKILL during a checkpoint write,
divergence guard, wandb, evaluation, loading and rendering."""

import dataclasses
import glob
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from tiny import TINY, cli_args, quiet, with_epochs, without_times

import crl
from crl import runs
from crl.checkpoint import CHECKPOINT_DIR, UNREADABLE_DIR, Checkpoints
from crl.config import config_from_dict, validate
from crl.preemption import Preempted
from crl.runs import RunError
from crl.tracking import wandb_values
from crl.train import EXIT_DIVERGED, EXIT_PREEMPTED, main, train

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def assert_states_identical(a, b):
    leaves_a, leaves_b = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for (path, x), y in zip(leaves_a, leaves_b, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and np.array_equal(x, y), jax.tree_util.keystr(path)


def tiny_config(tmp_path, name, **changes):
    return validate(dataclasses.replace(TINY, run_dir=str(tmp_path), run_name=name,
                                        compile_cache=os.environ["CRL_TEST_COMPILE_CACHE"],
                                        render=False, **changes))


@pytest.fixture(scope="session")
def wandb_offline():
    saved = {k: os.environ.get(k) for k in ("WANDB_MODE", "WANDB_SILENT")}
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def resumed_run(tmp_path_factory, compile_cache, wandb_offline):
    """TINY's schedule as one epoch, then ``--resume --num-epochs 2``, logging to wandb."""
    directory = tmp_path_factory.mktemp("resumed")
    first = tiny_config(directory, "resumed", wandb=True, wandb_project="crl-tests",
                        wandb_group="resume", wandb_tags=("tiny", "resume"))
    first = validate(with_epochs(first, 1))
    path = runs.run_path(first)
    _, first_history = train(first, log=quiet)
    log = []
    config = runs.resume_config(path, ["--num-epochs", "2"])
    state, history = train(config, log=log.append, resume=True)
    return config, state, history, path, first_history, log


# ---------------------------------------------------------------- checkpoints and exact resume
def test_one_epoch_resume_one_epoch_equals_two_epochs_bit_for_bit(tiny_run, resumed_run):
    tiny_config_, tiny_state, tiny_history, _ = tiny_run
    config, state, history, path, first_history, log = resumed_run
    assert any("resuming" in line and "after epoch 1" in line for line in log), log
    # --num-epochs 2 extended the 1-epoch run with epochs of the same length: TINY's schedule.
    assert config.total_env_steps == tiny_config_.total_env_steps
    assert without_times(first_history) == without_times(tiny_history[:2])
    assert without_times(history) == without_times(tiny_history)
    assert without_times(runs.read_metrics(path)) == without_times(tiny_history)
    assert_states_identical(state, tiny_state)  # params, optimisers, envs, buffer, key
    print("\nepoch: uninterrupted | 1 epoch + resume + 1 epoch")
    for a, b in zip(tiny_history, history, strict=True):
        shown = ("train/critic_loss", "train/actor_loss", "eval/dist")
        print(f"  {a['epoch']}: " + " | ".join(
            " ".join(f"{k}={m[k]!r}" for k in shown if k in m) for m in (a, b)))


def test_checkpoints_hold_the_last_k_epochs_and_their_metadata(tiny_run):
    config, state, _, path = tiny_run
    checkpoints = Checkpoints(path)
    assert checkpoints.epochs() == [1, 2]  # keep_checkpoints=2 of epochs 0, 1, 2
    meta = checkpoints.meta(2)
    assert meta.epoch == 2 and meta.has_buffer
    assert meta.env_steps == runs.read_metrics(path)[-1]["env_steps"]
    assert config_from_dict(meta.config) == config
    items = {p.name for p in (path / CHECKPOINT_DIR / "2").iterdir() if p.is_dir()}
    assert items == {"params", "state", "buffer", "meta"}
    assert not glob.glob(str(path / CHECKPOINT_DIR / "*tmp*"))
    loaded = crl.load_run(path)
    assert loaded.config == config
    assert_states_identical(loaded.params, state.agent.params)
    mean, log_std = loaded.networks.policy(loaded.params["actor"], np.zeros((1, 2)),
                                           np.zeros((1, 2)))
    assert mean.shape == log_std.shape == (1, 2)
    earlier = crl.load_run(path, epoch=1)
    assert not np.array_equal(earlier.params["actor"]["params"]["output"]["kernel"],
                              loaded.params["actor"]["params"]["output"]["kernel"])


def test_a_state_with_zero_size_arrays_is_saved_and_restored(tmp_path):
    """MJX's physics state holds zero-size arrays (no actuator activations in reacher's model),
    which Orbax refuses to write: they are left out and put back."""
    from crl.checkpoint import Meta
    from crl.train import Trainer

    config = tiny_config(tmp_path, "mjx", env="reacher", backend="mjx", episode_length=10,
                         min_replay_size=10, max_replay_size=20, unroll_length=5, num_envs=2,
                         batch_size=8, num_eval_envs=2)
    trainer = Trainer(config)
    state = trainer.init(jax.random.PRNGKey(0))
    assert any(x.size == 0 for x in jax.tree.leaves(state.env_state))
    checkpoints = Checkpoints(tmp_path / "mjx", keep=1)
    checkpoints.save(state, Meta(epoch=0, env_steps=0, has_buffer=True,
                                 config=dataclasses.asdict(config)))
    restored, _ = checkpoints.restore(trainer, 0)
    checkpoints.close()
    assert_states_identical(state, restored)


def test_resume_refuses_shape_changes_naming_the_fields_and_writes_nothing(tiny_run, capsys):
    _, _, _, path = tiny_run
    before = {f: f.read_bytes() for f in path.rglob("*") if f.is_file()}
    with pytest.raises(SystemExit):
        runs.resume_config(path, ["--num-epochs", "3", "--depth", "8", "--width", "64",
                                  "--maze-layout", "u4", "--episode-length", "30"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for change in ("depth 4 -> 8", "width 32 -> 64", "maze_layout None -> 'u4'",
                   "episode_length 25 -> 30"):
        assert change in err[0]
    assert "num_epochs" not in err[0]
    # The checkpoint's own record is checked too (a config.json edited by hand).
    edited = dataclasses.replace(runs.resume_config(path, ["--num-epochs", "3"]), depth=8)
    with pytest.raises(RunError, match="depth 4 -> 8"):
        train(edited, log=quiet, resume=True)
    assert {f: f.read_bytes() for f in path.rglob("*") if f.is_file()} == before


def test_resume_rejects_a_missing_run_and_a_finished_run(
        tiny_run, tmp_path, capsys):
    _, _, _, path = tiny_run
    with pytest.raises(SystemExit) as exit_:
        main(["--resume", str(tmp_path / "nope")])
    assert exit_.value.code == 2
    assert "no run at" in capsys.readouterr().err
    with pytest.raises(RunError, match=r"finished its 2 epochs; .* --num-epochs N \(N > 2\)"):
        train(runs.resume_config(path, []), log=quiet, resume=True)
    with pytest.raises(SystemExit):
        main(["--resume", str(path), "--run-name", "other"])
    assert "--run-name cannot be combined with --resume" in capsys.readouterr().err


def test_an_unreadable_latest_checkpoint_is_set_aside_and_the_one_before_is_resumed(
        tiny_run, tmp_path):
    _, _, tiny_history, source = tiny_run
    path = tmp_path / "damaged"
    shutil.copytree(source, path)
    for file in (path / CHECKPOINT_DIR / "2" / "params").rglob("*"):
        if file.is_file():
            file.write_bytes(b"")  # a disk that lost the data
    log = []
    config = runs.resume_config(path, ["--num-epochs", "3", "--no-render"])
    _, history = train(config, log=log.append, resume=True)
    assert any("checkpoint 2 is unreadable" in line for line in log), log
    assert [m["epoch"] for m in history] == [0, 1, 2, 3]
    assert without_times(history[:3]) == without_times(tiny_history)  # epoch 2, redone
    assert len(list((path / UNREADABLE_DIR).iterdir())) == 1
    # When no checkpoint is readable, resuming fails in one line and changes nothing.
    for epoch in Checkpoints(path).epochs():
        for file in (path / CHECKPOINT_DIR / str(epoch) / "meta").rglob("*"):
            if file.is_file():
                file.write_bytes(b"{")
    before = {f: f.read_bytes() for f in path.rglob("*") if f.is_file()}
    with pytest.raises(RunError, match=r"no checkpoint of .* is readable"):
        train(runs.resume_config(path, ["--num-epochs", "4"]), log=quiet, resume=True)
    assert {f: f.read_bytes() for f in path.rglob("*") if f.is_file()} == before


# ---------------------------------------------------------------- preemption and kills
def poll(predicate, timeout: float, process=None):
    deadline = time.monotonic() + timeout
    while not predicate():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process ended early: {process.communicate()}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def epochs_logged(path: Path) -> list[int]:
    file = path / runs.METRICS_FILE
    if not file.exists():
        return []
    return [json.loads(line)["epoch"] for line in file.read_text().splitlines()
            if line.endswith("}")]


def test_sigterm_checkpoints_exits_3_and_the_run_resumes_to_the_end(tiny_run, tmp_path):
    _, _, tiny_history, _ = tiny_run
    config = with_epochs(tiny_config(tmp_path, "preempted"), 12)
    path = runs.run_path(config)
    process = subprocess.Popen([sys.executable, "-m", "crl.train", *cli_args(config)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    poll(lambda: 1 in epochs_logged(path), timeout=300, process=process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    stopped = epochs_logged(path)[-1]
    print(f"\nSIGTERM after epoch 1's line: exit code {process.returncode}, stopped after "
          f"epoch {stopped}")
    assert process.returncode == EXIT_PREEMPTED, err[-3000:]
    assert 1 <= stopped < 12
    assert f"stopped by SIGTERM after epoch {stopped}" in err
    assert f"--resume {path}" in err
    assert Checkpoints(path).epochs()[-1] == stopped

    log = []
    _, history = train(runs.resume_config(path, []), log=log.append, resume=True)
    print(f"resumed after epoch {stopped}: {log[0]}")
    assert f"after epoch {stopped}" in log[0]
    assert [m["epoch"] for m in history] == list(range(13))
    assert epochs_logged(path) == list(range(13))
    assert without_times(history[:3]) == without_times(tiny_history)


def test_sigusr1_stops_after_the_prefill_and_a_bufferless_checkpoint_refills(tmp_path):
    config = tiny_config(tmp_path, "usr1", checkpoint_buffer=False)
    path = runs.run_path(config)

    def signal_on_first_checkpoint(line):
        if line.startswith("checkpoint of epoch 0"):
            os.kill(os.getpid(), signal.SIGUSR1)

    with pytest.raises(Preempted) as stop:
        train(config, log=signal_on_first_checkpoint)
    assert stop.value.epoch == 0 and stop.value.signal_name == "SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # handlers are restored
    assert Checkpoints(path).epochs() == [0]
    assert not (path / CHECKPOINT_DIR / "0" / "buffer").exists()

    log = []
    _, history = train(runs.resume_config(path, []), log=log.append, resume=True)
    assert any("refilled it with" in line for line in log), log
    # By hand for TINY: a prefill is 240 env steps and an epoch 240 (tests/test_train.py); the
    # resume adds a second prefill.
    assert [m["env_steps"] for m in history] == [240, 720, 960]


AGREE = textwrap.dedent("""
    import sys
    import jax
    from crl.preemption import PreemptionWatch

    port, rank = sys.argv[1], int(sys.argv[2])
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2,
                               process_id=rank)
    watch = PreemptionWatch()
    before = watch.agreed()
    if rank == 1:
        watch.received = "SIGUSR1"  # as if Slurm's signal reached this process only
    print(before, watch.agreed())
""")


def test_processes_agree_to_stop_when_one_of_them_is_signalled():
    """Slurm signals the processes of a job at slightly different times; every process must
    stop after the same epoch or the others would wait forever in a collective."""
    from test_distributed import free_port

    port = str(free_port())
    processes = [subprocess.Popen([sys.executable, "-c", AGREE, port, str(rank)], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for rank in (0, 1)]
    outputs = [process.communicate(timeout=300) for process in processes]
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-3000:]
        assert out.strip().splitlines()[-1] == "None SIGUSR1"


KILL_DURING_SAVE = textwrap.dedent("""
    import os, signal, sys
    from orbax.checkpoint._src.path import atomicity

    where, epoch = sys.argv[1], sys.argv[2]
    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def killed_finalize(self, *args, **kwargs):
        final = self.get_final()
        commit = where == "commit" and final.name == epoch
        item = where == "item" and final.parent.name.startswith(epoch + ".orbax-checkpoint-tmp")
        if commit or item:
            os.kill(os.getpid(), signal.SIGKILL)
        return await finalize(self, *args, **kwargs)

    atomicity.AtomicRenameTemporaryPath.finalize = killed_finalize
    from crl.train import main
    main(sys.argv[3:])
""")


@pytest.mark.parametrize("where", ["commit", "item"])
def test_sigkill_while_writing_a_checkpoint_leaves_a_run_that_resumes(tiny_run, tmp_path,
                                                                      where):
    """Killed before the rename that commits checkpoint 2 (every item written), or while its
    first item is committed (the others not yet written)."""
    _, _, tiny_history, _ = tiny_run
    config = with_epochs(tiny_config(tmp_path, "killed"), 3)
    path = runs.run_path(config)
    result = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, where, "2",
                             *cli_args(config)], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    assert glob.glob(str(path / CHECKPOINT_DIR / "2.orbax-checkpoint-tmp*"))
    assert Checkpoints(path).epochs() == [0, 1]
    assert epochs_logged(path) == [0, 1, 2]  # epoch 2's line is written before its checkpoint

    log = []
    _, history = train(runs.resume_config(path, []), log=log.append, resume=True)
    print(f"\nSIGKILL at the {where} of checkpoint 2: exit {result.returncode}; {log[0]}")
    assert "after epoch 1" in log[0]
    assert not glob.glob(str(path / CHECKPOINT_DIR / "*tmp*"))
    assert Checkpoints(path).epochs() == [2, 3]
    assert without_times(history[:3]) == without_times(tiny_history)
    assert [m["epoch"] for m in history] == [0, 1, 2, 3]


# ---------------------------------------------------------------- divergence
def test_a_nan_stops_the_run_naming_epoch_and_quantity_and_keeps_the_last_checkpoint(
        tiny_run, tmp_path, capsys):
    config = tiny_config(tmp_path, "diverged", critic_lr=1e30)
    path = runs.run_path(config)
    with pytest.raises(SystemExit) as exit_:
        main(cli_args(config))
    assert exit_.value.code == EXIT_DIVERGED
    errors = [line for line in capsys.readouterr().err.splitlines() if "diverged" in line]
    print("\n" + errors[0])
    assert len(errors) == 1
    assert "diverged in epoch 1: " in errors[0] and "is not finite" in errors[0]
    quantity = errors[0].split("epoch 1: ")[1].split(" is not finite")[0]
    logged_by_training = {k for k in tiny_run[2][1] if k.startswith("train/")}
    assert quantity in logged_by_training or quantity.startswith("params/"), quantity
    assert "the last good checkpoint is epoch 0" in errors[0]
    assert epochs_logged(path) == [0]
    assert Checkpoints(path).epochs() == [0]
    assert np.isfinite(crl.load_run(path).params["critic"]["sa_encoder"]["params"]["output"]
                       ["kernel"]).all()


def test_the_guard_names_the_first_non_finite_metric_or_parameter():
    from crl.divergence import first_non_finite

    params = {"critic": {"sa_encoder": {"kernel": np.ones((2, 2), np.float32)}},
              "log_alpha": np.float32(0)}
    assert first_non_finite({"train/critic_loss": 1.0}, params) is None
    assert first_non_finite({"train/critic_loss": float("nan")}, params) == "train/critic_loss"
    params["critic"]["sa_encoder"]["kernel"][1, 0] = np.inf
    assert first_non_finite({"train/critic_loss": 1.0},
                            {"params": params}) == "params/critic/sa_encoder/kernel"


# ---------------------------------------------------------------- wandb
def wandb_records(file: Path):
    """The records of a .wandb file: W&B's LevelDB-style log of protobuf Records (a 7-byte
    header, then 32 KiB blocks of chunks with a 7-byte header: crc32, length, type)."""
    from wandb.proto import wandb_internal_pb2

    data, block = file.read_bytes(), 32 * 1024
    assert data[:4] == b":W&B", data[:7]
    position, pending = 7, b""
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if kind == 0:  # zero padding up to the end of the block
            position += block - position % block
            continue
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_wandb_offline_logs_every_epoch_once_into_one_run_across_a_resume(resumed_run):
    _, _, history, path, _, _ = resumed_run
    run_id = (path / runs.WANDB_ID_FILE).read_text().strip()
    files = sorted(glob.glob(str(path / "wandb" / f"offline-run-*-{run_id}" / "*.wandb")))
    assert len(files) == 2  # the first process and the resumed one, under one id
    logged, runs_seen = [], []
    for file in files:
        for record in wandb_records(Path(file)):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                runs_seen.append((record.run.run_id, record.run.project,
                                  record.run.display_name, tuple(record.run.tags)))
            elif kind == "history":
                items = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item}
                logged.append({k: v for k, v in items.items() if not k.startswith("_")})
    assert set(runs_seen) == {(run_id, "crl-tests", "resumed", ("tiny", "resume"))}
    # Per-block lists reach wandb as their min, mean and max over blocks.
    assert logged == json.loads(json.dumps([wandb_values(m) for m in history]))
    assert "diag/critic/sa_encoder/grad_norm/max" in logged[1]
    assert [m["epoch"] for m in logged] == [0, 1, 2]


def test_wandb_that_cannot_start_fails_in_one_line_before_compiling_and_leaves_nothing(
        tmp_path):
    config = tiny_config(tmp_path, "no_account", wandb=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env |= {"WANDB_MODE": "online", "HOME": str(tmp_path)}  # no API key anywhere
    result = subprocess.run([sys.executable, "-m", "crl.train", *cli_args(config)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("crl: error")]
    assert len(errors) == 1 and errors[0].startswith("crl: error: wandb: "), result.stderr
    assert "compiled" not in result.stdout
    assert not runs.run_path(config).exists()


# ---------------------------------------------------------------- evaluation and rendering
def test_evaluate_prints_the_metrics_the_run_logged(tiny_run, capsys):
    from crl import evaluate

    _, _, history, path = tiny_run
    metrics = evaluate.main([str(path), "--json"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == metrics
    assert metrics == {k: v for k, v in history[-1].items() if k.startswith("eval/")} | {
        "epoch": 2}


@pytest.mark.parametrize(("args", "message"), [
    (["--env", "point_u_mze"], "--env: unknown env 'point_u_mze'; did you mean 'point_u_maze'"),
    (["--episodes", "0"], "--episodes 0 must be a positive integer"),
    (["--epoch", "7"], "has no checkpoint of epoch 7; it has 1, 2"),
    (["--env", "ant_maze"], "eval_env='ant_maze' does not fit the policy of env='point_u_maze'"),
])
def test_evaluate_rejects_bad_input_in_one_line(tiny_run, capsys, args, message):
    from crl import evaluate

    _, _, _, path = tiny_run
    with pytest.raises(SystemExit) as exit_:
        evaluate.main([str(path), *args])
    assert exit_.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("crl:")]
    assert len(err) == 1 and message in err[0], err


def test_evaluate_rejects_a_missing_run(tmp_path, capsys):
    from crl import evaluate

    with pytest.raises(SystemExit):
        evaluate.main([str(tmp_path / "nope")])
    assert f"no run at {tmp_path / 'nope'}" in capsys.readouterr().err


def test_a_finished_run_renders_its_policy_and_crl_render_renders_any_checkpoint(tiny_run,
                                                                                 tmp_path):
    from crl import render

    _, _, _, path = tiny_run
    assert (path / "render" / "epoch_2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    render.main([str(path), "--epoch", "1", "--episodes", "2", "--out", str(tmp_path)])
    assert [f.name for f in tmp_path.iterdir()] == ["epoch_1.png"]


VIDEO = textwrap.dedent("""
    import sys
    import numpy as np
    import mujoco
    from crl.render import write_video

    model = mujoco.MjModel.from_xml_string(
        '<mujoco><worldbody><light pos="0 0 3"/><geom type="plane" size="5 5 .1"/>'
        '<body><freejoint/><geom type="sphere" size=".3"/></body></worldbody></mujoco>')
    qpos = np.tile(model.qpos0, (12, 1))
    qpos[:, 0] = np.linspace(0, 2, 12)
    qpos[:, 2] = 0.3
    for _ in range(2):  # a second video in the same process (MuJoCo aborted on it once)
        print("written:", write_video(sys.argv[1], model, qpos, qpos[:, :3], 20.0, print))
""")


@pytest.mark.parametrize("gl", ["egl", "glfw"])
def test_mp4_with_an_opengl_context_and_one_line_without(tmp_path, gl):
    """EGL (Mesa's software renderer on this machine) gives a video; GLFW without a display
    cannot make a context, which is said in one line per video, and the process goes on."""
    import imageio.v3 as iio

    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"} | {"MUJOCO_GL": gl}
    video = tmp_path / "ball.mp4"
    result = subprocess.run([sys.executable, "-c", VIDEO, str(video)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    if gl == "egl":
        assert lines == ["written: True"] * 2
        frames = iio.imread(video)
        assert frames.shape[0] == 12
        # The ball moves: between the first and last frames a patch of pixels changes by more
        # than the video's compression noise, and each frame is a scene, not a fill.
        change = np.abs(frames[0].astype(int) - frames[-1].astype(int)).max(axis=-1)
        print(f"pixels changed by more than 30: {np.mean(change > 30):.4f}")
        assert np.mean(change > 30) > 1e-3
        assert all(len(np.unique(f.reshape(-1, 3), axis=0)) > 16 for f in frames)
    else:
        assert len(lines) == 4 and lines[1::2] == ["written: False"] * 2
        assert all("no OpenGL context" in line and "MUJOCO_GL=egl" in line
                   for line in lines[::2])
        assert not video.exists()


# ---------------------------------------------------------------- devices
TWO_DEVICES = textwrap.dedent("""
    import dataclasses, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    sys.path.insert(0, sys.argv[2])
    import jax, numpy as np
    from tiny import TINY
    from crl.checkpoint import Checkpoints, Meta
    from crl.config import validate
    from crl.train import Trainer

    config = validate(TINY)
    trainer = Trainer(config)
    state = trainer.prefill(trainer.init(jax.random.PRNGKey(0)))
    checkpoints = Checkpoints(sys.argv[1], keep=1)
    checkpoints.save(state, Meta(epoch=0, env_steps=0, has_buffer=True,
                                 config=dataclasses.asdict(config)))
    restored, _ = checkpoints.restore(trainer, 0)
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(state)[0],
                            jax.tree.leaves(restored), strict=True):
        assert a.sharding == b.sharding, (jax.tree_util.keystr(path), a.sharding, b.sharding)
        assert np.array_equal(a, b), jax.tree_util.keystr(path)
    print("buffer:", restored.buffer.data["state"].sharding.spec,
          len(restored.buffer.data["state"].sharding.device_set))
    print("env:", restored.env_state.obs.sharding.spec)
    one_device = Trainer(config, jax.devices()[:1])
    params, _ = Checkpoints(sys.argv[1]).restore_params(one_device, 0)
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, params, state.agent.params)))
    print("restored on one device:", jax.tree.leaves(params)[0].devices())
""")


def test_a_checkpoint_restores_into_the_shardings_of_a_two_device_mesh(tmp_path):
    """Envs and replay split over two devices come back split the same way; the parameters
    also load on one device (a laptop evaluating a cluster's run)."""
    result = subprocess.run([sys.executable, "-c", TWO_DEVICES, str(tmp_path), str(TESTS)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "buffer: P(None, 'data') 2" in result.stdout
    assert "env: P('data',)" in result.stdout
