"""Sweeps: the grid and its validation, a Slurm submission without a cluster, local jobs through
submitit end to end (a job killed, the sweep re-run, the run resumed), requeueing, and the
report."""

import csv
import json
import os
import pickle
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from tiny import TINY, cli_args, with_epochs

from crl import report, runs, sweep
from crl.config import Config, parse_args

TINY_OPTIONS = [*cli_args(with_epochs(TINY, 6)), "--no-render"]


def test_the_grid_is_every_combination_of_swept_options_each_validated(tmp_path, capsys):
    argv = ["--env", "point_u_maze", "--depths", "4", "8", "--seeds", "0", "1", "2", "--width",
            "32", "64", "--batch-size", "64", "--run-dir", str(tmp_path), "--dry-run"]
    assert sweep.main(argv) == 0
    out = capsys.readouterr().out
    names = [f"point_u_maze_d{d}_s{s}_width-{w}" for d in (4, 8) for s in (0, 1, 2)
             for w in (32, 64)]
    assert all(f"{name} " in out for name in names)
    commands = [shlex.split(line.strip()) for line in out.splitlines()
                if line.strip().startswith("python -m crl.train")]
    assert len(commands) == 12
    for command in commands:
        config = parse_args(command[3:])
        assert config.batch_size == 64
        name = f"point_u_maze_d{config.depth}_s{config.seed}_width-{config.width}"
        assert config.run_name == name
        assert Path(config.run_dir) == tmp_path / "sweep_point_u_maze"
    assert "dry run: 12 jobs would be launched" in out
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


@pytest.mark.parametrize("argv, message", [
    (["--depths", "4", "6"], "depth=6 must be a positive multiple of 4"),
    (["--widht", "32"], "unknown option --widht; did you mean --width?"),
    (["--run-name", "x"], "--run-name cannot be given to a sweep"),
    (["--env", "antmaze", "--depths", "4"], "did you mean 'ant_maze'?"),
    (["--seeds", "0", "0"], "repeats a value"),
    (["--depths", "4", "--max-parallel", "0"], "--max-parallel 0 must be at least 1"),
])
def test_bad_sweeps_fail_in_one_line_before_anything_is_written(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        sweep.main([*argv, "--run-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not any(tmp_path.iterdir())


def test_a_second_sweep_with_other_shared_options_is_refused(tmp_path, capsys):
    argv = ["--env", "point_u_maze", "--depths", "4", "8", "--run-dir", str(tmp_path),
            "--name", "s"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sweep, "launch_local", lambda args, todo, sweep_dir: 0)  # runs nothing
        assert sweep.main([*argv, "--width", "32"]) == 0
        before = (tmp_path / "s" / sweep.SWEEP_FILE).read_text()
        with pytest.raises(SystemExit):
            sweep.main([*argv, "--width", "64"])
        assert "holds a sweep with other options" in capsys.readouterr().err
        assert (tmp_path / "s" / sweep.SWEEP_FILE).read_text() == before
        assert sweep.main([*argv, "--width", "32", "--seeds", "0", "1"]) == 0  # more seeds
    recorded = json.loads((tmp_path / "s" / sweep.SWEEP_FILE).read_text())["runs"]
    assert set(recorded) == {f"point_u_maze_d{d}_s{s}" for d in (4, 8) for s in (0, 1)}


FAKE_SBATCH = """#!/bin/sh
# Records the script it is given and answers as sbatch does.
n=$(ls "$FAKE_SLURM_DIR" | grep -c submitted)
cp "$1" "$FAKE_SLURM_DIR/submitted_$n.sh"
echo "Submitted batch job 4242$n"
"""
FAKE_SACCT = """#!/bin/sh
# Every job of the array 42420 is running.
echo "JobID|State|NodeList"
for i in 0 1 2 3; do echo "42420_$i|RUNNING|node1"; done
"""


def test_slurm_sweep_submits_one_job_array_with_the_requested_resources(tmp_path, monkeypatch,
                                                                       capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # never run: submitit checks it exists
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(tmp_path))
    argv = ["--depths", "4", "8", "--seeds", "0", "1", "--launcher", "slurm", "--partition",
            "gpu", "--account", "rl", "--gpus-per-job", "1",
            "--cpus-per-job", "6", "--mem-gb", "48", "--time-min", "120", "--constraint",
            "a100", "--array-parallelism", "3", "--signal-delay-s", "240",
            "--run-dir", str(tmp_path / "runs"), "--name", "s", *TINY_OPTIONS]
    assert sweep.main(argv) == 0
    script = (tmp_path / "submitted_0.sh").read_text()
    for line in ("#SBATCH --array=0-3%3", "#SBATCH --partition=gpu", "#SBATCH --account=rl",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=6",
                 "#SBATCH --mem=48GB", "#SBATCH --time=120", "#SBATCH --constraint=a100",
                 "#SBATCH --signal=USR2@240", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --requeue"):
        assert line in script, (line, script)
    sweep_dir = tmp_path / "runs" / "s"
    recorded = json.loads((sweep_dir / sweep.SWEEP_FILE).read_text())["runs"]
    assert {entry["job"] for entry in recorded.values()} == {f"42420_{i}" for i in range(4)}
    # Each array task runs the pickled job of its run: crl.train with the run's options.
    for name, entry in recorded.items():
        with open(sweep_dir / sweep.SUBMITIT_DIR / entry["job"] /
                  f"{entry['job']}_submitted.pkl", "rb") as f:
            job = pickle.load(f).function
        assert isinstance(job, sweep.TrainJob) and job.run_path == str(sweep_dir / name)
        config = parse_args(job.train_args)
        assert (config.depth, config.seed) == (int(entry["values"]["depth"]),
                                               int(entry["values"]["seed"]))
        assert config.run_name == name and Path(config.run_dir) == sweep_dir
        assert config.num_epochs == 6 and not config.render
    # Run again while the array is running: nothing is submitted twice.
    (bin_dir / "sacct").write_text(FAKE_SACCT)
    (bin_dir / "sacct").chmod(0o755)
    capsys.readouterr()
    assert sweep.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("Slurm job running: skipped") == 4 and "nothing to run" in out
    assert not (tmp_path / "submitted_1.sh").exists()


def test_wandb_sweep_describes_the_same_runs(tmp_path):
    argv = ["--depths", "4", "8", "--seeds", "0", "1", "--wandb-project", "depth",
            *TINY_OPTIONS, "--discount", "0.9", "0.99", "--run-dir", str(tmp_path),
            "--name", "s", "--wandb-sweep"]
    assert sweep.main(argv) == 0
    spec = yaml.safe_load((tmp_path / "s" / sweep.WANDB_SWEEP_FILE).read_text())
    assert spec["method"] == "grid" and spec["project"] == "depth"
    assert spec["parameters"] == {"depth": {"values": [4, 8]}, "seed": {"values": [0, 1]},
                                  "discount": {"values": [0.9, 0.99]}}
    command = spec["command"]
    assert command[:4] == ["${env}", "${interpreter}", "-m", "crl.train"]
    assert command[-1] == "${args}"
    # What `wandb agent` runs for one point of the grid: ${args} is --name=value per parameter.
    config = parse_args([*command[4:-1], "--depth=8", "--seed=1", "--discount=0.9"])
    assert (config.depth, config.seed, config.discount, config.wandb) == (8, 1, 0.9, True)
    assert config.num_epochs == 6 and config.wandb_project == "depth"
    assert not (tmp_path / "s" / sweep.SWEEP_FILE).exists()  # nothing launched


# ---------------------------------------------------------------- local jobs, end to end
def training_process(run_name: str) -> int | None:
    """The pid of the `python -m crl.train` process of ``run_name``, if it runs."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"crl.train" in args and run_name.encode() in args:
            return int(entry.name)
    return None


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def logged_epochs(path: Path) -> list[int]:
    file = path / runs.METRICS_FILE
    lines = file.read_text().splitlines() if file.exists() else []
    return [json.loads(line)["epoch"] for line in lines if line.endswith("}")]


def test_local_sweep_end_to_end_killed_job_resumes_and_report_matches(tmp_path, compile_cache):
    """2 depths x 2 seeds through submitit's local executor, two at a time. One run's training
    process is killed (SIGKILL) after its first epoch; the sweep reports it, and running the
    same command again resumes that run from its checkpoint and skips the finished ones. The
    report's tables agree with the runs' own metrics. The same depth-4 runs with
    --vectorize-seeds (one job) report the same numbers."""
    command = [sys.executable, "-m", "crl.sweep", "--depths", "4", "8", "--seeds", "0", "1",
               "--launcher", "local", "--max-parallel", "2",
               "--run-dir", str(tmp_path), "--name", "s", "--compile-cache", compile_cache,
               *TINY_OPTIONS]
    sweep_dir = tmp_path / "s"
    victim = "point_u_maze_d4_s1"
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    pid = wait_for(lambda: training_process(victim), 300, f"{victim} to start")
    wait_for(lambda: any(e >= 1 for e in logged_epochs(sweep_dir / victim)), 300,
             f"{victim}'s first epoch")
    os.kill(pid, signal.SIGSTOP)  # freeze it, then look, then kill it
    before_kill = (sweep_dir / victim / runs.METRICS_FILE).read_text().splitlines()
    checkpointed = runs.checkpointed_epochs(sweep_dir / victim)
    os.kill(pid, signal.SIGKILL)
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 1, out
    assert f"{victim} FAILED" in out and "1 of 4 runs failed" in out
    assert out.count(" finished: eval/success=") == 3, out
    assert sweep.run_status(sweep_dir / victim) == "resume" and checkpointed[-1] < 6

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{victim:<40} resume after epoch {checkpointed[-1]}" in again.stdout
    assert again.stdout.count("finished: skipped") == 3
    assert "all 1 runs finished" in again.stdout
    resumed = (sweep_dir / victim / runs.METRICS_FILE).read_text().splitlines()
    assert logged_epochs(sweep_dir / victim) == list(range(7))
    # Resumed, not restarted: the epochs up to the checkpoint are the lines written before.
    assert resumed[:checkpointed[-1] + 1] == before_kill[:checkpointed[-1] + 1]

    rows = report.main([str(sweep_dir), "-o", str(tmp_path / "fig.png")])
    with open(tmp_path / "fig_runs.csv") as f:
        per_run = {row["name"]: row for row in csv.DictReader(f)}
    assert len(per_run) == 4
    for name, row in per_run.items():
        metrics = runs.read_metrics(sweep_dir / name)
        assert row["status"] == "finished" and int(row["epoch"]) == 6
        assert float(row["final"]) == pytest.approx(metrics[-1]["eval/success"])
        assert float(row["best"]) == pytest.approx(max(m["eval/success"] for m in metrics))
    for row in rows:
        finals = [float(r["final"]) for r in per_run.values() if int(r["depth"]) == row["depth"]]
        assert row["finished"] == 2 and row["final_mean"] == pytest.approx(np.mean(finals))
    assert (tmp_path / "fig.png").stat().st_size > 10_000

    # The depth-4 seeds again, vectorised in one job: the same runs, the same report rows.
    vectorised = [sys.executable, "-m", "crl.sweep", "--depths", "4", "--seeds", "0", "1",
                  "--vectorize-seeds", "--launcher", "local", "--run-dir", str(tmp_path),
                  "--name", "v", "--compile-cache", compile_cache, *TINY_OPTIONS]
    done = subprocess.run(vectorised, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "started point_u_maze_d4_s{0,1}" in done.stdout and "all 1 jobs finished" in done.stdout
    report.main([str(tmp_path / "v"), "-o", str(tmp_path / "v.png")])
    with open(tmp_path / "v_runs.csv") as f:
        together = {row["name"]: row for row in csv.DictReader(f)}
    assert sorted(together) == ["point_u_maze_d4_s0", "point_u_maze_d4_s1"]
    for name, row in together.items():
        assert row["status"] == "finished"
        for column in ("final", "best", "final_success_any"):
            assert float(row[column]) == pytest.approx(float(per_run[name][column]), abs=1e-5)
    again = subprocess.run(vectorised, capture_output=True, text=True, timeout=600)
    assert again.stdout.count("finished: skipped") == 2 and "nothing to run" in again.stdout


def test_a_signalled_job_checkpoints_and_its_requeued_job_resumes(tmp_path, compile_cache):
    """What submitit does when a job nears its time limit or is preempted: it calls the job's
    ``checkpoint`` (which stops the training process after its epoch, checkpointed) and runs
    the job it returns; that job resumes the run and finishes it."""
    path = tmp_path / "run"
    args = [*TINY_OPTIONS, "--seed", "3", "--run-dir", str(tmp_path), "--run-name", "run",
            "--compile-cache", compile_cache]
    job = sweep.TrainJob(str(path), args)
    job.start()
    wait_for(lambda: any(e >= 1 for e in logged_epochs(path)), 300, "the first epoch")
    requeued = job.checkpoint()
    stopped_after = runs.checkpointed_epochs(path)[-1]
    assert training_process(str(path)) is None  # the training process has exited
    assert 1 <= stopped_after < 6 and logged_epochs(path)[-1] == stopped_after
    assert isinstance(requeued.function, sweep.TrainJob)
    result = pickle.loads(pickle.dumps(requeued)).result()  # submitit pickles it to requeue
    assert result["epoch"] == 6 and logged_epochs(path) == list(range(7))


# ---------------------------------------------------------------- the report
def fake_run(sweep_dir: Path, depth: int, seed: int, finals: list[float], num_epochs: int = 3,
             success_any: list[float] | None = None):
    """A run directory with a config and ``finals`` as the eval/success of epochs 0, 1, ...
    (and ``success_any`` as their eval/success_any; by default min(eval/success, 1))."""
    name = f"point_u_maze_d{depth}_s{seed}"
    path = sweep_dir / name
    path.mkdir(parents=True)
    runs.write_config(path, Config(env="point_u_maze", depth=depth, seed=seed,
                                   num_epochs=num_epochs).resolved())
    success_any = success_any or [min(v, 1.0) for v in finals]
    runs.write_metrics(path, [{"epoch": e, "env_steps": 100 * e, "eval/success": v,
                               "eval/success_any": a}
                              for e, (v, a) in enumerate(zip(finals, success_any, strict=True))])
    return name


def write_sweep_record(sweep_dir: Path, names: list[str], base: list[str] | None = None) -> None:
    """The sweep.json crl.sweep would have written for runs named <env>_d<depth>_s<seed>, with
    the shared options ``base``."""
    entries = {}
    for name in names:
        depth, seed = (int(part[1:]) for part in name.split("_")[-2:])
        entries[name] = {"env": "point_u_maze", "depth": depth, "seed": seed,
                         "values": {"depth": str(depth), "seed": str(seed)}}
    (sweep_dir / sweep.SWEEP_FILE).write_text(json.dumps({"base": base or [], "runs": entries}))


def test_report_averages_finished_seeds_and_shows_the_others_as_they_are(tmp_path):
    sweep_dir = tmp_path / "s"
    entries = {}
    for seed, finals in enumerate([[0, 5, 4, 9], [0, 2, 8, 7], [0, 1, 3, 5]]):
        entries[fake_run(sweep_dir, 4, seed, finals)] = {}
    for seed, finals in enumerate([[0, 20, 30, 40], [0, 10, 50]]):  # seed 1 in progress
        entries[fake_run(sweep_dir, 16, seed, finals)] = {}
    entries["point_u_maze_d16_s2"] = {}  # not started
    write_sweep_record(sweep_dir, list(entries))

    rows = report.main([str(sweep_dir), "-o", str(tmp_path / "out" / "scaling.png")])
    by_depth = {row["depth"]: row for row in rows}
    assert by_depth[4]["final_mean"] == pytest.approx(7.0)
    assert by_depth[4]["best_mean"] == pytest.approx((9 + 8 + 5) / 3)
    assert by_depth[4]["final_ci_low"] <= 7.0 <= by_depth[4]["final_ci_high"]
    assert 5 <= by_depth[4]["final_ci_low"] < by_depth[4]["final_ci_high"] <= 9
    # Depth 16: one finished seed (no interval), one in progress, one not started.
    assert (by_depth[16]["finished"], by_depth[16]["in_progress"],
            by_depth[16]["not_started"]) == (1, 1, 1)
    assert by_depth[16]["final_mean"] == 40 and np.isnan(by_depth[16]["final_ci_low"])
    with open(tmp_path / "out" / "scaling_runs.csv") as f:
        status = {row["name"]: row["status"] for row in csv.DictReader(f)}
    assert status["point_u_maze_d16_s1"] == "in progress"
    assert status["point_u_maze_d16_s2"] == "not started"
    with open(tmp_path / "out" / "scaling.csv") as f:
        assert len(list(csv.DictReader(f))) == 2
    assert (tmp_path / "out" / "scaling.png").stat().st_size > 10_000


def test_report_reads_a_study_of_sweeps_with_success_any_intervals(tmp_path):
    """A study directory holds sweep directories (docs/studies/<study>/<sweep>/): the report
    reads them all, and gives eval/success_any's final and best means with intervals."""
    study = tmp_path / "study"
    first = [fake_run(study / "deep", 4, seed, [0, 10, 20, 20], success_any=history)
             for seed, history in enumerate([[0, 0.5, 0.5, 0.25], [0, 0.75, 0.5, 0.5],
                                             [0, 1.0, 0.5, 0.75]])]
    write_sweep_record(study / "deep", first)
    second = [fake_run(study / "deeper", 16, seed, [0, 30, 40, 40],
                       success_any=[0, 0.25, 0.5, 1.0])
              for seed in (0, 1)]
    write_sweep_record(study / "deeper", second)
    rows = report.main([str(study), "-o", str(tmp_path / "study.png")])
    by_depth = {row["depth"]: row for row in rows}
    assert sorted(by_depth) == [4, 16] and by_depth[4]["finished"] == 3
    # Finals 0.25, 0.5, 0.75; bests 0.5, 0.75, 1.0.
    assert by_depth[4]["final_success_any_mean"] == pytest.approx(0.5)
    assert by_depth[4]["best_success_any_mean"] == pytest.approx(0.75)
    low, high = by_depth[4]["final_success_any_ci_low"], by_depth[4]["final_success_any_ci_high"]
    assert 0.25 <= low < 0.5 < high <= 0.75
    assert by_depth[16]["final_success_any_mean"] == 1.0
    assert by_depth[16]["final_success_any_ci_low"] == by_depth[16]["final_success_any_ci_high"]
    with open(tmp_path / "study_runs.csv") as f:
        per_run = list(csv.DictReader(f))
    assert len(per_run) == 5
    assert sorted(float(r["best_success_any"]) for r in per_run) == [0.5, 0.75, 1.0, 1.0, 1.0]


def test_a_study_tells_its_sweeps_apart_by_the_shared_options_that_differ(tmp_path):
    """Two sweeps of one study at the same depth but other shared options (one leaving
    --num-envs to its preset, point_quick's 128) are two rows, labelled by what differs;
    the options both share (--no-render) and the agent (a line of its own) label nothing."""
    study = tmp_path / "study"
    small = [fake_run(study / "small", 4, seed, [0, 1, 1, 1]) for seed in (0, 1)]
    write_sweep_record(study / "small", small, ["--preset", "point_quick", "--no-render",
                                                "--total-env-steps", "1000000"])
    large = [fake_run(study / "large", 4, seed, [0, 5, 7, 7]) for seed in (0, 1)]
    write_sweep_record(study / "large", large, ["--preset", "point_quick", "--no-render",
                                                "--num-envs", "256", "--total-env-steps",
                                                "2000000", "--agent", "crl"])
    rows = report.main([str(study), "-o", str(tmp_path / "study.png")])
    finals = {row["options"]: row["final_mean"] for row in rows}
    assert finals == {"num_envs=128,total_env_steps=1000000": 1.0,
                      "num_envs=256,total_env_steps=2000000": 7.0}


def test_a_sweep_of_one_depth_takes_more_depths_later(tmp_path):
    """A single --depths (or --seeds) value is an axis like several, so the sweep's shared
    options do not change when a later command adds depths: it records the new runs."""
    for depths in (["16"], ["4", "16"]):
        argv = ["--env", "point_u_maze", "--depths", *depths, "--seeds", "0", "--width", "64",
                "--run-dir", str(tmp_path), "--name", "s"]
        _, base, axes = sweep.parse(argv)
        sweep._record(tmp_path / "s", base, sweep.build_grid(base, axes), argv)
    saved = sweep.read_sweep(tmp_path / "s")
    assert sorted(saved["runs"]) == ["point_u_maze_d16_s0", "point_u_maze_d4_s0"]
    assert "--depth" not in saved["base"] and "--seed" not in saved["base"]
    assert saved["base"] == ["--env", "point_u_maze", "--width", "64"]
    assert saved["runs"]["point_u_maze_d16_s0"]["values"] == {"depth": "16", "seed": "0"}
    assert len(saved["commands"]) == 2


def test_report_of_a_missing_directory_fails_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        report.main([str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert message == f"crl: error: no run or sweep at {tmp_path / 'nowhere'}"


def test_agents_are_an_axis_of_the_grid_and_each_point_is_validated_for_its_agent(tmp_path,
                                                                                  capsys):
    argv = ["--agent", "crl", "sac", "gcbc", "--env", "point_u_maze", "--depths", "4", "16",
            "--seeds", "0", "1", "2", "--run-dir", str(tmp_path), "--dry-run"]
    assert sweep.main(argv) == 0
    out = capsys.readouterr().out
    commands = [shlex.split(line.strip()) for line in out.splitlines()
                if line.strip().startswith("python -m crl.train")]
    configs = [parse_args(command[3:]) for command in commands]
    assert sorted((c.agent, c.depth, c.seed) for c in configs) == sorted(
        (a, d, s) for a in ("crl", "sac", "gcbc") for d in (4, 16) for s in (0, 1, 2))
    names = {c.run_name for c in configs}
    assert {"point_u_maze_d4_s0", "point_u_maze_sac_d16_s2", "point_u_maze_gcbc_d4_s1"} <= names
    assert len(names) == 18
    with pytest.raises(SystemExit):  # the sac points refuse an option of crl's
        sweep.main(["--agent", "crl", "sac", "--energy", "dot", "--depths", "4",
                    "--run-dir", str(tmp_path)])
    assert "--energy does not apply to agent 'sac'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_the_report_has_one_row_and_one_line_per_agent(tmp_path):
    from dataclasses import replace

    for agent, her, level in (("crl", False, 30.0), ("sac", True, 60.0), ("sac", False, 10.0)):
        for seed in (0, 1):
            config = replace(TINY, agent=agent, her=her, seed=seed, num_epochs=1,
                             repr_dim=64 if agent != "crl" else TINY.repr_dim)
            config = replace(config, run_name=runs.run_label(parse_args(cli_args(config))))
            path = tmp_path / config.run_name
            runs.create_run(path, config)
            runs.write_metrics(path, [
                {"epoch": 0, "env_steps": 0, "eval/success": 0.0, "eval/success_any": 0.0},
                {"epoch": 1, "env_steps": 10, "eval/success": level + seed,
                 "eval/success_any": 0.5}])
    rows = report.main([str(tmp_path), "-o", str(tmp_path / "fig.png")])
    by_agent = {row["agent"]: row for row in rows}
    assert set(by_agent) == {"crl", "sac+her", "sac"}
    assert [by_agent[a]["final_mean"] for a in ("crl", "sac+her", "sac")] == [30.5, 60.5, 10.5]
    assert all(row["finished"] == 2 for row in rows)
    with open(tmp_path / "fig_runs.csv") as f:
        names = {row["name"]: row["agent"] for row in csv.DictReader(f)}
    assert names["point_u_maze_sac_her_d4_s1"] == "sac+her"
    assert names["point_u_maze_d4_s0"] == "crl"
