"""What a depth study keeps, what its critics learned, and whether its runs reproduce.

A study is a directory of sweep directories (``crl.sweep --run-dir runs/<study> --name <sweep>``,
one sweep per agent and setting: tables and figures are per sweep). Four steps, each a
subcommand:

- ``keep runs/<study> docs/studies/<study>``: copy what must last (each sweep's sweep.json, each
  finished run's config.json and metrics.jsonl; never checkpoints) into the repository.
- ``critics runs/<study> docs/studies/<study>``: needs the runs' checkpoints, so it runs where
  they were trained. Q-value maps of the shallowest and the deepest critic of each sweep for one
  goal (the paper's Figure 9 layout); every critic's corridor agreement
  (``crl.viz.corridor_agreement``) and where its replay buffer's states are (how much of the
  data reaches the far goals), written as critics.csv, which lasts without the checkpoints.
- ``diagnostics docs/studies/<study>``: from the kept metrics alone, a table of what the
  diagnostics say at the last epoch (representation rank, dormant units per block) and the
  per-block and rank figures of seed 0 of each depth.
- ``check docs/studies/<study> --sweep S --run R --epochs K``: trains the first K epochs of one
  kept run again, from its sweep's recorded options, and compares each epoch's metric with the
  kept seeds of that grid point: within seed noise, or not.

``python -m crl.report docs/studies/<study> -o <figure>`` gives the table and depth figure.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from crl import runs
from crl.report import bootstrap_interval, is_finished, sweep_dirs
from crl.sweep import SWEEP_FILE, read_sweep

KEPT_FILES = (runs.CONFIG_FILE, runs.METRICS_FILE)
CRITICS_FILE = "critics.csv"


def sweeps_of(study: Path) -> list[Path]:
    found = sweep_dirs(study)
    if not found:
        raise SystemExit(f"crl: error: {study} holds no sweep (no */{SWEEP_FILE})")
    return found


def finished_runs(sweep_dir: Path) -> list[Path]:
    """The sweep's runs that logged their last epoch, in the sweep's order."""
    done = []
    for name in read_sweep(sweep_dir)["runs"]:
        path = sweep_dir / name
        if (path / runs.CONFIG_FILE).is_file() and is_finished(runs.load_config(path),
                                                               runs.read_metrics(path)):
            done.append(path)
    return done


def keep(source: Path, destination: Path) -> None:
    for sweep_dir in sweeps_of(source):
        target = destination / sweep_dir.name
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(sweep_dir / SWEEP_FILE, target / SWEEP_FILE)
        done = finished_runs(sweep_dir)
        for path in done:
            (target / path.name).mkdir(exist_ok=True)
            for name in KEPT_FILES:
                shutil.copy2(path / name, target / path.name / name)
        left = sorted(set(read_sweep(sweep_dir)["runs"]) - {p.name for p in done})
        print(f"{sweep_dir.name}: kept {len(done)} finished runs"
              + (f"; not finished (not kept): {', '.join(left)}" if left else ""))


# ------------------------------------------------------------------------------ critics
def coverage(xy: np.ndarray, layout, scale: float) -> dict[str, float]:
    """Where states ``xy`` ([time, env, 2], world x, y) are in a maze: the fraction in the
    layout's goal cells, the fraction of envs (columns) with one such state, and the farthest
    cell reached, counted in cells from the start along the corridors."""
    from crl.envs.maze import corridor_steps

    cells = np.floor(xy / scale + 0.5).astype(int)
    in_goal_cells = np.zeros(cells.shape[:-1], bool)
    for row, column in layout.goals:
        in_goal_cells |= (cells[..., 0] == row) & (cells[..., 1] == column)
    steps = corridor_steps(layout)
    reached = {tuple(cell) for cell in cells.reshape(-1, 2).tolist()}
    return {"replay_far_fraction": float(in_goal_cells.mean()),
            "replay_envs_reaching_far": float(in_goal_cells.any(0).mean()),
            "replay_farthest_cells": max(steps.get(cell, 0) for cell in reached)}


def replay_coverage(path: Path, env) -> dict[str, float]:
    """``coverage`` of the states in the replay buffer of the run's last checkpoint, with the
    evaluation env's goal cells (the far goals) as the cells counted. A critic can only learn
    about states its data holds."""
    import jax

    from crl.buffer import stored_steps
    from crl.checkpoint import Checkpoints
    from crl.train import Trainer

    trainer = Trainer(runs.load_config(path), jax.devices()[:1])
    checkpoints = Checkpoints(path)
    state, _ = checkpoints.restore(trainer, checkpoints.latest_epoch())
    checkpoints.close()
    xy = stored_steps(state.buffer)["state"][..., list(env.goal_indices[:2])]
    return coverage(xy, env.layout, env.scale)


def critics(source: Path, destination: Path, goal_cell: tuple[int, int] | None,
            figure_dir: Path) -> None:
    from crl import viz

    rows, maps = [], defaultdict(dict)
    for sweep_dir in sweeps_of(source):
        for path in finished_runs(sweep_dir):
            env, run = viz.load_maze_run(path)
            if not run.agent.has_critic:
                continue
            q_map = viz.q_value_map(env, run, goal_cell=goal_cell)
            agreement = viz.corridor_agreement(q_map)
            rows.append({"sweep": sweep_dir.name, "run": path.name,
                         "agent": runs.agent_label(run.config), "depth": run.config.depth,
                         "seed": run.config.seed, "goal_cell": str(q_map.goal_cell),
                         **agreement, **replay_coverage(path, env)})
            maps[sweep_dir.name][(run.config.depth, run.config.seed)] = q_map
            print(", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in rows[-1].items()))
    destination.mkdir(parents=True, exist_ok=True)
    with open(destination / CRITICS_FILE, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for sweep_name, by_point in maps.items():
        depths = sorted({depth for depth, _ in by_point})
        seed = min(seed for _, seed in by_point)
        ends = sorted({depths[0], depths[-1]})  # one map where the sweep has one depth
        shown = [by_point[depth, seed] for depth in ends if (depth, seed) in by_point]
        name = f"q_values_{sweep_name}_{'_vs_'.join(f'd{depth}' for depth in ends)}.png"
        print("wrote", viz.save_figure(viz.compare_q_values(shown), figure_dir / name))


def critics_table(study: Path) -> list[dict[str, object]]:
    """Per sweep (one agent and setting) and depth, the mean over seeds of each column of
    critics.csv, with intervals."""
    with open(study / CRITICS_FILE) as f:
        rows = list(csv.DictReader(f))
    groups = defaultdict(list)
    for row in rows:
        groups[row["sweep"], row["agent"], int(row["depth"])].append(row)
    table = []
    for (sweep_name, agent, depth), group in sorted(groups.items()):
        entry: dict[str, object] = {"sweep": sweep_name, "agent": agent, "depth": depth,
                                    "seeds": len(group)}
        for key in ("corridor", "straight_line", "replay_far_fraction",
                    "replay_envs_reaching_far", "replay_farthest_cells"):
            values = np.array([float(r[key]) for r in group])
            low, high = bootstrap_interval(values)
            entry |= {f"{key}_mean": values.mean(), f"{key}_ci_low": low, f"{key}_ci_high": high}
        table.append(entry)
    return table


# -------------------------------------------------------------------------- diagnostics
def last_diagnostics(history: list[dict]) -> dict[str, float]:
    """The last epoch's representation ranks and dormant units (mean and worst block) of every
    network the run diagnosed."""
    last = history[-1]
    out = {}
    for key, value in last.items():
        if not key.startswith("diag/"):
            continue
        name = key[len("diag/"):]
        if name.endswith(("effective_rank", "feature_rank")):
            out[name] = float(value)
        elif name.endswith("dormant_fraction"):
            out[name + "_mean"] = float(np.mean(value))
            out[name + "_max"] = float(np.max(value))
    return out


def diagnostics(study: Path, figure_dir: Path) -> None:
    from crl import viz

    groups = defaultdict(list)
    firsts = defaultdict(dict)
    for sweep_dir in sweeps_of(study):
        for path in finished_runs(sweep_dir):
            config = runs.load_config(path)
            key = sweep_dir.name, runs.agent_label(config), config.depth
            groups[key].append(last_diagnostics(runs.read_metrics(path)))
            firsts[sweep_dir.name].setdefault(config.depth, path)
    rows = []
    for (sweep_name, agent, depth), group in sorted(groups.items()):
        row: dict[str, object] = {"sweep": sweep_name, "agent": agent, "depth": depth,
                                  "seeds": len(group)}
        for key in sorted(group[0]):
            row[key] = float(np.mean([g[key] for g in group]))
        rows.append(row)
    first = ("sweep", "agent", "depth", "seeds")
    keys = sorted({k for row in rows for k in row},
                  key=lambda k: (k not in first, first.index(k) if k in first else 0, k))
    with open(study / "diagnostics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, restval="")
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        print(", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in row.items()))
    for sweep_name, by_depth in firsts.items():
        paths = [by_depth[d] for d in sorted(by_depth)]
        print("wrote", viz.save_figure(viz.plot_representation_rank(paths),
                                       figure_dir / f"rank_{sweep_name}.png"))
        print("wrote", viz.save_figure(viz.plot_block_health(paths),
                                       figure_dir / f"block_health_{sweep_name}.png"))


# -------------------------------------------------------------------------------- check
def seed_noise(values: np.ndarray, scale: float) -> float:
    """How far a rerun may land from the kept seeds and still be 'within seed noise': twice
    their standard deviation, but at least a tenth of the metric's scale (an episode count of
    64 alone gives a success rate a standard error near 0.06)."""
    return max(2 * float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, 0.1 * scale)


def check(study: Path, sweep: str, run: str, epochs: int, metric: str) -> bool:
    sweep_dir = study / sweep
    record = read_sweep(sweep_dir)
    if record is None or run not in record["runs"]:
        raise SystemExit(f"crl: error: no run {run!r} in {sweep_dir / SWEEP_FILE}; runs: "
                         f"{', '.join(record['runs']) if record else 'none'}")
    kept = runs.load_config(sweep_dir / run)
    if not 1 <= epochs <= kept.num_epochs:
        raise SystemExit(f"crl: error: epochs={epochs} must be in 1..{kept.num_epochs}")
    # The same epochs as the kept run: its prefill, then `epochs` of its training steps.
    total = (kept.min_replay_size * kept.num_envs + epochs * kept.training_steps_per_epoch
             // kept.training_steps_multiplier * kept.env_steps_per_training_step)
    values = record["runs"][run]["values"]
    point = [arg for key, value in values.items() for arg in (f"--{key.replace('_', '-')}",
                                                              value)]
    siblings = [sweep_dir / name for name, entry in record["runs"].items()
                if {k: v for k, v in entry["values"].items() if k != "seed"}
                == {k: v for k, v in values.items() if k != "seed"}
                and (sweep_dir / name / runs.METRICS_FILE).is_file()]
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, "-m", "crl.train", *record["base"], *point,
                   "--num-epochs", str(epochs), "--total-env-steps", str(total),
                   "--run-dir", scratch, "--run-name", "rerun"]
        print(" ".join(command))
        subprocess.run(command, check=True)
        rerun = runs.read_metrics(Path(scratch) / "rerun")
    scale = 1.0 if metric == "eval/success_any" else float(kept.episode_length)
    ok = True
    print(f"{metric}: epoch, rerun, kept {run}, kept seeds of the point (n={len(siblings)}), "
          "allowed distance from their range")
    kept_histories = {p: runs.read_metrics(p) for p in siblings}
    own_history = runs.read_metrics(sweep_dir / run)
    for line in rerun[1:]:
        epoch = line["epoch"]
        seeds = np.array([history[epoch][metric] for history in kept_histories.values()])
        own = own_history[epoch][metric]
        slack = seed_noise(seeds, scale)
        inside = seeds.min() - slack <= line[metric] <= seeds.max() + slack
        ok &= inside
        print(f"  {epoch}: {line[metric]:.3f}, {own:.3f}, {np.round(seeds, 3).tolist()}, "
              f"±{slack:.3f}: {'within seed noise' if inside else 'OUTSIDE seed noise'}")
    print("reproduced within seed noise" if ok else "NOT reproduced")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("keep")
    p.add_argument("source", type=Path)
    p.add_argument("destination", type=Path)
    p = commands.add_parser("critics")
    p.add_argument("source", type=Path)
    p.add_argument("destination", type=Path)
    p.add_argument("--goal-cell", type=int, nargs=2, default=None,
                   help="default: the goal cell farthest from the start along the corridors")
    p.add_argument("--figures", type=Path, default=None, help="default: <destination>/figures")
    p = commands.add_parser("diagnostics")
    p.add_argument("study", type=Path)
    p.add_argument("--figures", type=Path, default=None, help="default: <study>/figures")
    p = commands.add_parser("check")
    p.add_argument("study", type=Path)
    p.add_argument("--sweep", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--metric", default="eval/success_any")
    args = parser.parse_args(argv)
    if args.command == "keep":
        keep(args.source, args.destination)
    elif args.command == "critics":
        critics(args.source, args.destination, tuple(args.goal_cell) if args.goal_cell else None,
                args.figures or args.destination / "figures")
        for row in critics_table(args.destination):
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                              for k, v in row.items()}))
    elif args.command == "diagnostics":
        diagnostics(args.study, args.figures or args.study / "figures")
    else:
        return 0 if check(args.study, args.sweep, args.run, args.epochs, args.metric) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
