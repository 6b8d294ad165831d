"""The depth study of docs/studies/depth_u4_far.md: its commands validate with crl's own parsing
and give the configurations its kept runs record; experiments/depth_study.py keeps what must
last (and nothing else) and tabulates the diagnostics as defined."""

import csv
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

from crl import runs, sweep
from crl.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import depth_study
import reproduction

ROOT = Path(__file__).resolve().parents[1]
STUDY = "depth_u4_far"
DOC = ROOT / "docs" / "studies" / f"{STUDY}.md"
KEPT = ROOT / "docs" / "studies" / STUDY
# Fields that name where a run lives, not what it trains.
WHERE = ("run_dir", "run_name", "seeds")


def test_every_training_command_of_the_study_validates_and_gives_its_kept_runs():
    commands = [c for c in reproduction.commands(DOC) if c.startswith("python -m crl.sweep")]
    assert len(commands) >= 2
    planned = {}
    for command in commands:
        _, base, axes = sweep.parse(shlex.split(command)[3:])
        name = command.split("--name ")[1].split()[0]
        for run in sweep.build_grid(base, axes):
            planned[name, run.name] = run.config
    kept = sorted(KEPT.glob(f"*/*/{runs.CONFIG_FILE}"))
    assert kept, f"no kept run under {KEPT}"
    for file in kept:
        saved = runs.load_config(file.parent)
        key = (file.parent.parent.name, file.parent.name)
        assert key in planned, f"{key} is not a run of the doc's commands"
        assert {k: v for k, v in saved.__dict__.items() if k not in WHERE} == {
            k: v for k, v in planned[key].resolved().__dict__.items() if k not in WHERE}, key
        history = runs.read_metrics(file.parent)
        assert history[-1]["epoch"] == saved.num_epochs  # only finished runs are kept


def fake_sweep(sweep_dir: Path, finished: dict[int, list[dict]], unfinished: int) -> None:
    """A sweep of seeds ``finished`` (their metrics: num_epochs + 1 lines) and ``unfinished``
    (one line), each with a checkpoint directory that must not be kept."""
    entries = {}
    for seed, history in [*finished.items(), (unfinished, [{"epoch": 0, "env_steps": 0}])]:
        name = f"point_u_maze_d4_s{seed}"
        path = sweep_dir / name
        (path / "checkpoints" / "1").mkdir(parents=True)
        (path / "checkpoints" / "1" / "state").write_text("weights")
        runs.write_config(path, Config(env="point_u_maze", depth=4, seed=seed,
                                       num_epochs=1).resolved())
        runs.write_metrics(path, history)
        entries[name] = {"env": "point_u_maze", "agent": "crl", "depth": 4, "seed": seed,
                         "values": {"depth": "4", "seed": str(seed)}}
    (sweep_dir / "sweep.json").write_text(json.dumps({"base": [], "runs": entries,
                                                      "commands": []}))


def history(rank: float, dormant: list[float]) -> list[dict]:
    return [{"epoch": 0, "env_steps": 0},
            {"epoch": 1, "env_steps": 10, "diag/phi/effective_rank": rank,
             "diag/critic/sa_encoder/dormant_fraction": dormant,
             "diag/critic/sa_encoder/grad_norm": [1.0, 2.0],
             "diag/critic/sa_encoder/activation_rms": [1.0, 1.5],
             "diag/critic/sa_encoder/update_ratio": [1e-3, 2e-3]}]


def test_keep_copies_finished_runs_config_and_metrics_and_nothing_else(tmp_path):
    fake_sweep(tmp_path / "runs" / "crl", {0: history(3.0, [0.0, 0.5])}, unfinished=1)
    depth_study.keep(tmp_path / "runs", tmp_path / "kept")
    kept = tmp_path / "kept" / "crl"
    assert sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*") if p.is_file()) == [
        "point_u_maze_d4_s0/config.json", "point_u_maze_d4_s0/metrics.jsonl", "sweep.json"]
    assert runs.read_metrics(kept / "point_u_maze_d4_s0")[1]["diag/phi/effective_rank"] == 3.0


def test_the_diagnostics_table_averages_the_last_epoch_over_seeds(tmp_path):
    fake_sweep(tmp_path / "crl", {0: history(3.0, [0.0, 0.5]), 1: history(5.0, [0.25, 0.25])},
               unfinished=2)
    depth_study.diagnostics(tmp_path, tmp_path / "figures")
    with open(tmp_path / "diagnostics.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["sweep"], row["agent"], row["depth"], row["seeds"]) == ("crl", "crl", "4", "2")
    assert float(row["phi/effective_rank"]) == 4.0
    # Seed 0: blocks 0 and 0.5 (mean 0.25, worst 0.5); seed 1: 0.25 and 0.25.
    assert float(row["critic/sa_encoder/dormant_fraction_mean"]) == 0.25
    assert float(row["critic/sa_encoder/dormant_fraction_max"]) == pytest.approx(0.375)
    assert "critic/sa_encoder/grad_norm" not in row
    for figure in ("rank_crl.png", "block_health_crl.png"):
        assert (tmp_path / "figures" / figure).stat().st_size > 5_000


@pytest.mark.parametrize(("seeds", "scale", "expected"), [
    ([0.2, 0.4, 0.6], 1.0, 0.4),  # twice the sample standard deviation (0.2)
    ([0.0, 0.0, 0.0], 1.0, 0.1),  # identical seeds: a tenth of the scale
    ([10.0, 10.0], 250.0, 25.0),
])
def test_seed_noise(seeds, scale, expected):
    assert depth_study.seed_noise(np.array(seeds), scale) == pytest.approx(expected)


def test_coverage_counts_states_in_the_far_goal_cells_and_the_farthest_corridor_cell():
    from crl.envs.maze import load_layout

    layout = load_layout("u4_maze_eval")  # start (2, 1); goals (4, 1), (5, 1), (5, 2), (5, 3)
    scale = 4.0
    # Two envs over three steps, as world (x, y) = cell * scale (+ a bit, inside the cell).
    cells = np.array([[[2, 1], [2, 1]],
                      [[1, 1], [5, 3]],    # env 1 at (5, 3): 7 cells from the start
                      [[1, 3], [4, 1]]])   # env 1 at (4, 1): 10 cells, the farthest
    found = depth_study.coverage(cells * scale + 0.3, layout, scale)
    assert found == {"replay_far_fraction": 2 / 6, "replay_envs_reaching_far": 0.5,
                     "replay_farthest_cells": 10}
