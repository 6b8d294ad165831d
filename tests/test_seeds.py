"""Many seeds in one program (--seeds): each seed's numbers are those of the seed run alone, one
run directory per seed, exact resume of the group, a NaN in one seed stops only it, and the
sweep's --vectorize-seeds jobs."""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import (
    BASELINES,
    TINY,
    cli_args,
    metric_atol,
    quiet,
    refusal_on_a_small_device,
    with_epochs,
    without_times,
)

from crl import runs, sweep
from crl.config import Config, config_from_dict, parse_args, seed_configs, validate
from crl.divergence import SeedsDiverged
from crl.evaluate import load_run
from crl.train import Trainer, _resumable_seeds, main, train


def group_config(tmp_path, name, **changes) -> Config:
    return validate(dataclasses.replace(TINY, run_dir=str(tmp_path), run_name=name,
                                        compile_cache=os.environ["CRL_TEST_COMPILE_CACHE"],
                                        render=False, **changes))


def assert_same_metrics(alone, in_group, rtol=1e-5):
    """Every metric of every epoch equal within float32 tolerance (the vectorised products
    may round differently)."""
    alone, in_group = without_times(alone), without_times(in_group)
    assert [m["epoch"] for m in alone] == [m["epoch"] for m in in_group]
    for a, g in zip(alone, in_group, strict=True):
        assert a.keys() == g.keys()
        for key in a:
            np.testing.assert_allclose(g[key], a[key], rtol=rtol, atol=metric_atol(key),
                                       err_msg=key)


@pytest.fixture(scope="module")
def group_run(tmp_path_factory):
    """TINY with --seeds 0 1, trained for its 2 epochs: (config, state, histories, paths)."""
    config = group_config(tmp_path_factory.mktemp("group"), "group", seeds=(0, 1))
    state, histories = train(config, log=quiet)
    return config, state, histories, runs.seed_run_paths(config)


@pytest.fixture(scope="module")
def alone_runs(tiny_run, tmp_path_factory):
    """TINY alone with seed 0 (tiny_run) and seed 1: [(config, state, history)] by seed."""
    alone_1 = group_config(tmp_path_factory.mktemp("alone"), "alone", seed=1)
    return [tiny_run[:3], (alone_1, *train(alone_1, log=quiet))]


def test_each_seed_of_a_group_is_the_seed_run_alone(group_run, alone_runs):
    _, state, histories, paths = group_run
    assert [p.name for p in paths] == ["group_s0", "group_s1"]
    alone_1 = alone_runs[1][0]
    for seed, (_, alone_state, alone_history) in enumerate(alone_runs):
        assert_same_metrics(alone_history, histories[seed])
        assert without_times(runs.read_metrics(paths[seed])) == without_times(histories[seed])
        for x, y in zip(jax.tree.leaves(alone_state.agent.params),
                        jax.tree.leaves(jax.tree.map(lambda p, k=seed: p[k], state.agent.params)),
                        strict=True):
            np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-4, atol=1e-5)
        # Its directory is that of a run alone: its own seed, no group in its config, and the
        # evaluation tools read its checkpoint as any run's.
        saved = runs.load_config(paths[seed])
        assert saved.seed == seed and saved.seeds == () and saved.run_name == paths[seed].name
        assert dataclasses.replace(saved, run_dir="", run_name="") == dataclasses.replace(
            alone_1, seed=seed, run_dir="", run_name="")
        loaded = load_run(paths[seed])
        for x, y in zip(jax.tree.leaves(loaded.params),
                        jax.tree.leaves(jax.tree.map(lambda p, k=seed: p[k], state.agent.params)),
                        strict=True):
            assert np.array_equal(np.asarray(x), np.asarray(y))
        assert json.loads((paths[seed] / runs.SEEDS_FILE).read_text()) == {
            "seeds": [0, 1], "run_name": "group_s{seed}"}


def test_the_command_line_spreads_a_group_over_the_cpu_cores(alone_runs, tmp_path):
    """python -m crl.train --seeds 0 1: on a CPU of 2 or more cores, each seed on a core of its
    own (as a device), with each seed's numbers those of the seed alone."""
    cores = len(os.sched_getaffinity(0))
    args = [*cli_args(dataclasses.replace(TINY, render=False)), "--seeds", "0", "1",
            "--run-dir", str(tmp_path), "--run-name", "cli",
            "--compile-cache", os.environ["CRL_TEST_COMPILE_CACHE"]]
    done = subprocess.run([sys.executable, "-m", "crl.train", *args], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "XLA_FLAGS": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    assert ("2 seeds vectorised over 2 devices" in done.stdout) == (cores >= 2), done.stdout
    for seed, (_, _, alone_history) in enumerate(alone_runs):
        assert_same_metrics(alone_history, runs.read_metrics(tmp_path / f"cli_s{seed}"))


def test_a_baseline_agent_vectorised_is_each_seed_alone(baseline_runs, tmp_path):
    """SAC + HER with seeds 1 0 (in that order): the second is the seed-0 run alone."""
    _, _, alone, _ = baseline_runs("sac_her")
    config = group_config(tmp_path, "sac", seeds=(1, 0), **BASELINES["sac_her"])
    _, histories = train(config, log=quiet)
    assert_same_metrics(alone, histories[1])
    assert runs.load_config(tmp_path / "sac_s0").seed == 0


def test_resuming_a_group_from_any_seed_directory_is_exact(group_run, tmp_path):
    """One epoch, then --resume of seed 1's directory with --num-epochs 2: both seeds resume
    and log exactly what the uninterrupted group logged."""
    _, _, histories, _ = group_run
    first = group_config(tmp_path, "group", seeds=(0, 1))
    train(with_epochs(first, 1), log=quiet)
    assert [m["epoch"] for m in runs.read_metrics(tmp_path / "group_s0")] == [0, 1]
    main(["--resume", str(tmp_path / "group_s1"), "--num-epochs", "2"])
    for seed in (0, 1):
        assert without_times(runs.read_metrics(tmp_path / f"group_s{seed}")) == \
            without_times(histories[seed])


def test_a_nan_in_one_seed_stops_only_that_seed(group_run, tmp_path, monkeypatch):
    """Seed 1's temperature is NaN from the start: its first epoch's losses are not finite. It
    stops there with its checkpoint of epoch 0; seed 0 trains on as in the healthy group; the
    run ends with an error naming seed 1; a resume of the group leaves seed 1 out, saying how
    to resume it."""
    _, _, histories, _ = group_run
    init = Trainer.init

    def poisoned(self, key):
        state = init(self, key)
        return state.replace(agent=state.agent.replace(
            log_alpha=state.agent.log_alpha.at[1].set(jnp.nan)))

    monkeypatch.setattr(Trainer, "init", poisoned)
    config = group_config(tmp_path, "nan", seeds=(0, 1))
    logged = []
    with pytest.raises(SeedsDiverged, match=r"^seed 1 diverged in epoch 1: train/\S+ is not "
                       r"finite.*the last good checkpoint is epoch 0; the other seeds went on"):
        train(config, log=logged.append)
    assert any(line.startswith(f"seed 1 ({tmp_path / 'nan_s1'}) diverged in epoch 1")
               for line in logged), logged
    assert_same_metrics(histories[0], runs.read_metrics(tmp_path / "nan_s0"), rtol=1e-6)
    assert runs.checkpointed_epochs(tmp_path / "nan_s0")[-1] == 2
    assert [m["epoch"] for m in runs.read_metrics(tmp_path / "nan_s1")] == [0]
    assert runs.checkpointed_epochs(tmp_path / "nan_s1") == [0]

    messages = []
    resumed = _resumable_seeds(runs.resume_config(tmp_path / "nan_s1", []), messages.append)
    assert resumed.seeds == (0,)
    assert messages == [f"seed 1 ({tmp_path / 'nan_s1'}) is at epoch 0, behind the group's "
                        f"epoch 2 (it diverged or stopped apart): left out; resume it on its "
                        f"own with --resume {tmp_path / 'nan_s1'} --seeds 1"]


def test_a_lost_seed_directory_is_one_line_naming_it(group_run, tmp_path, capsys):
    _, _, _, paths = group_run
    for path in paths:
        shutil.copytree(path, tmp_path / path.name)
    shutil.rmtree(tmp_path / "group_s1")
    with pytest.raises(SystemExit) as exit:
        main(["--resume", str(tmp_path / "group_s0")])
    assert exit.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"crl: error: {tmp_path / 'group_s1'}, the run of seed 1 of this group, is missing (no "
        f"config.json); resume the others with --resume {tmp_path / 'group_s0'} --seeds 0"]


def test_a_group_too_big_for_the_device_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    """A simulated accelerator with 60% of what 2 seeds need: one seed fits, which the refusal
    (before compiling, nothing written) says."""
    config = group_config(tmp_path, "big", seeds=(0, 1))
    line = refusal_on_a_small_device(config, 0.6, monkeypatch, capsys)
    assert re.fullmatch(
        r"crl: error: this run will not fit: crl\.plan predicts [\d.]+ MiB per device of the "
        r"[\d.]+ MiB available; would fit: (.* or )?--seeds with at most 1 per job "
        r"\(python -m crl\.plan prints the breakdown\)", line), line
    assert not list(tmp_path.iterdir())


def test_seeds_on_the_command_line_and_their_run_names(tmp_path, capsys):
    config = parse_args(["--env", "point_u_maze", "--seeds", "3", "1", "--run-name", "x"])
    assert config.seeds == (3, 1)
    assert [(c.seed, c.seeds, c.run_name) for c in seed_configs(config)] == [
        (3, (), "x_s3"), (1, (), "x_s1")]
    named = parse_args(["--env", "point_u_maze", "--seeds", "0", "1", "--run-name", "a{seed}b"])
    assert [c.run_name for c in seed_configs(named)] == ["a0b", "a1b"]
    assert [c.run_name for c in seed_configs(parse_args(["--env", "point_u_maze"]))] == [None]
    for argv, message in ((["--seeds", "1", "1"], "seeds=1 1 repeats a seed"),
                          (["--seeds", "0", str(2**31)], "seed=2147483648 must be an integer")):
        with pytest.raises(SystemExit):
            parse_args(["--env", "point_u_maze", *argv])
        assert message in capsys.readouterr().err
    # A resume may name a subset of the group, and no seed outside it.
    group = tmp_path / "g_s1"
    runs.create_run(group, config_from_dict({**dataclasses.asdict(config), "seed": 1, "seeds": [],
                                             "run_name": "g_s1", "run_dir": str(tmp_path)}),
                    group=dataclasses.replace(config, run_name="g_s{seed}"))
    assert runs.resume_config(group, []).seeds == (3, 1)
    assert runs.resume_config(group, ["--seeds", "1"]).seeds == (1,)
    with pytest.raises(SystemExit):
        runs.resume_config(group, ["--seeds", "1", "7"])
    assert "seeds 7 are not runs of the group" in capsys.readouterr().err


def test_vectorised_sweep_jobs_group_each_point_by_state(tmp_path, monkeypatch):
    """--vectorize-seeds: one job per point and state of its runs (never started; started, by
    latest checkpoint); a job leaves finished seeds out, resumes started ones as a group, and
    starts new ones with --seeds."""
    _, base, axes = sweep.parse(["--env", "point_u_maze", "--depths", "4", "8",
                                 "--seeds", "0", "1", "2", "--run-dir", str(tmp_path)])
    grid = sweep.build_grid(base, axes)
    sweep_dir = tmp_path / "s"

    def started(name, epochs, num_epochs=5):
        path = sweep_dir / name
        runs.create_run(path, dataclasses.replace(grid[0].config, num_epochs=num_epochs))
        for epoch in epochs:
            (path / runs.CHECKPOINT_DIR / str(epoch)).mkdir(parents=True)

    started("point_u_maze_d4_s0", [2, 3])
    started("point_u_maze_d4_s1", [3])
    started("point_u_maze_d8_s1", [4, 5])  # finished
    todo = [run for run, status in sweep.plan(grid, sweep_dir, "local")
            if status in ("new", "resume")]
    jobs = sweep.make_jobs(todo, sweep_dir, vectorize=True)
    assert sorted(job.name for job in jobs) == ["point_u_maze_d4_s{0,1}", "point_u_maze_d4_s{2}",
                                                "point_u_maze_d8_s{0,2}"]
    launched = []
    monkeypatch.setattr(sweep.subprocess, "Popen", lambda argv, env: launched.append(argv[3:]))
    for job in sorted(jobs, key=lambda job: job.name):
        job.train_job(sweep_dir).start()
    assert launched[0] == ["--resume", str(sweep_dir / "point_u_maze_d4_s0"), "--seeds", "0",
                           "1"]
    for command, depth, seeds in ((launched[1], "4", ["2"]), (launched[2], "8", ["0", "2"])):
        assert command[command.index("--seeds") + 1:] == seeds and "--seed" not in command
        assert command[command.index("--run-name") + 1] == f"point_u_maze_d{depth}_s{{seed}}"
        assert command[command.index("--depth") + 1] == depth
        assert command[command.index("--run-dir") + 1] == str(sweep_dir)
    # The names a group's seeds get are the sweep's own names of those runs.
    for run in grid:
        assert run.template.replace("{seed}", str(run.config.seed)) == run.name
    assert Path(launched[1][launched[1].index("--run-dir") + 1]).name == "s"
