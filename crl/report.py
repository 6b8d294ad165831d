"""Results of sweeps: ``python -m crl.report runs/<sweep> [...] -o depth_scaling.png``.

Reads every run's ``metrics.jsonl`` and writes, next to the figure:

- ``<figure>_runs.csv``: one row per run: its status, the final and the best value of the
  metric (default ``eval/success``, the time at goal) and its final ``eval/success_any``;
- ``<figure>.csv``: one row per task, agent, other swept options (and, in a study of several
  sweeps, the shared options that tell them apart) and depth: the mean over the
  finished seeds of the final and of the best value of the metric and of ``eval/success_any``,
  each with a 95% bootstrap interval;
- the figure: the final value against depth (log-scale axis), one line per task and agent (and
  other swept options), in the style of the paper's Figure 1.

A run that has not finished all its epochs is shown as such (a hollow marker at its latest
value, ``in progress`` in the tables) and left out of the means; a run of the sweep that has not
started yet is listed as ``not started``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import sys
import warnings
from pathlib import Path

import numpy as np

from crl import runs
from crl.config import Config, fail

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
# What the figure's axes, seeds and lines already show.
NOT_SWEPT = ("depth", "seed", "env", "agent", "her")


@dataclasses.dataclass(frozen=True)
class RunResult:
    name: str
    env: str
    agent: str  # crl, sac, sac+her, td3, td3+her, gcbc
    depth: int
    seed: int
    options: str  # the run's other swept options, e.g. "width=512" ("" if none)
    status: str  # finished, in progress, not started
    epoch: int  # the last epoch logged
    num_epochs: int
    env_steps: int
    final: float  # the metric at the last epoch logged
    best: float  # the best value of the metric over the logged epochs
    final_success_any: float
    best_success_any: float


def _not_started(name: str, entry: dict) -> RunResult:
    """A run of a sweep's ``sweep.json`` that has not written anything yet."""
    return RunResult(name, entry["env"], entry.get("agent", "crl"), entry["depth"], entry["seed"],
                     _options_label(entry["values"]), "not started", 0, 0, 0, np.nan, np.nan,
                     np.nan, np.nan)


def _options_label(values: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in values.items() if k not in NOT_SWEPT)


def is_finished(config: Config, history: list[dict]) -> bool:
    """Whether a run's metrics reach its last epoch."""
    return bool(history) and history[-1]["epoch"] >= config.num_epochs


def read_run(path: Path, metric: str, values: dict[str, str] | None = None) -> RunResult:
    """The result of one run directory (``values``: its swept options, if from a sweep)."""
    config = runs.load_config(path)
    history = runs.read_metrics(path)
    if not history:
        return _not_started(path.name, {"env": config.env, "agent": runs.agent_label(config),
                                        "depth": config.depth,
                                        "seed": config.seed, "values": values or {}})
    if metric not in history[-1]:
        raise runs.RunError(f"{path / runs.METRICS_FILE} has no metric {metric!r}; it has "
                            f"{', '.join(k for k in history[-1] if k.startswith('eval/'))}")
    last = history[-1]
    return RunResult(
        name=path.name, env=config.env, agent=runs.agent_label(config), depth=config.depth,
        seed=config.seed,
        options=_options_label(values or {}),
        status="finished" if is_finished(config, history) else "in progress",
        epoch=last["epoch"], num_epochs=config.num_epochs, env_steps=last["env_steps"],
        final=float(last[metric]), best=float(max(m[metric] for m in history)),
        final_success_any=float(last.get("eval/success_any", np.nan)),
        best_success_any=max((float(m["eval/success_any"]) for m in history
                              if "eval/success_any" in m), default=np.nan))


def sweep_dirs(study: Path) -> list[Path]:
    """The sweep directories directly inside ``study`` (none if it is not a directory)."""
    from crl.sweep import SWEEP_FILE

    return sorted(p.parent for p in study.glob(f"*/{SWEEP_FILE}")) if study.is_dir() else []


def sweep_settings(sweeps: list[Path]) -> dict[Path, str]:
    """What tells a study's sweeps apart besides their agents: the training options that differ
    between their shared command lines (``base``), as crl.train parses them (a preset's values
    included), e.g. "num_envs=512". Empty for a study of one setting."""
    from crl.config import parse_args
    from crl.sweep import read_sweep

    configs = {path: parse_args(read_sweep(path).get("base", [])) for path in sweeps}
    differing = [field.name for field in dataclasses.fields(Config)
                 if field.name not in NOT_SWEPT
                 and len({repr(getattr(c, field.name)) for c in configs.values()}) > 1]
    return {path: ",".join(f"{name}={getattr(config, name)}" for name in sorted(differing))
            for path, config in configs.items()}


def collect(paths: list[Path], metric: str) -> list[RunResult]:
    """Every run under ``paths``: sweep directories (their sweep.json lists runs not started
    yet too), run directories, directories holding run directories, or a study: a directory
    holding sweep directories."""
    from crl.sweep import read_sweep

    results = []
    for path in paths:
        path = Path(path).expanduser()
        sweep = read_sweep(path)
        sweeps = sweep_dirs(path)
        if sweep is None and sweeps:
            settings = sweep_settings(sweeps)
            for sweep_dir in sweeps:
                results += [dataclasses.replace(r, options=",".join(
                                filter(None, (settings[sweep_dir], r.options))))
                            for r in collect([sweep_dir], metric)]
        elif sweep is not None:
            for name, entry in sweep["runs"].items():
                run_path = path / name
                results.append(read_run(run_path, metric, entry["values"])
                               if (run_path / runs.CONFIG_FILE).is_file()
                               else _not_started(name, entry))
        elif (path / runs.CONFIG_FILE).is_file():
            results.append(read_run(path, metric))
        elif path.is_dir():
            found = sorted(p.parent for p in path.glob(f"*/{runs.CONFIG_FILE}"))
            if not found:
                raise runs.RunError(f"{path} holds no run (no */{runs.CONFIG_FILE})")
            results += [read_run(p, metric) for p in found]
        else:
            raise runs.RunError(f"no run or sweep at {path}")
    return results


def bootstrap_interval(values: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """The 95% percentile-bootstrap interval of the mean (NaN for fewer than two values)."""
    from scipy import stats

    if len(values) < 2:
        return np.nan, np.nan
    with warnings.catch_warnings():  # identical values: a zero-width interval is right
        warnings.simplefilter("ignore")
        result = stats.bootstrap((np.asarray(values, float),), np.mean,
                                 confidence_level=CONFIDENCE, n_resamples=BOOTSTRAP_RESAMPLES,
                                 method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def aggregate(results: list[RunResult]) -> list[dict[str, object]]:
    """One row per (env, agent, other options, depth): means and intervals over finished
    seeds."""
    rows = []
    key = lambda r: (r.env, r.agent, r.options, r.depth)
    for (env, agent, options, depth), group in itertools.groupby(sorted(results, key=key),
                                                                 key=key):
        group = list(group)
        finished = [r for r in group if r.status == "finished"]
        row: dict[str, object] = {"env": env, "agent": agent, "options": options,
                                  "depth": depth,
                                  "finished": len(finished),
                                  "in_progress": sum(r.status == "in progress" for r in group),
                                  "not_started": sum(r.status == "not started" for r in group)}
        for name in ("final", "best", "final_success_any", "best_success_any"):
            values = np.array([getattr(r, name) for r in finished])
            low, high = bootstrap_interval(values)
            row |= {f"{name}_mean": float(values.mean()) if len(values) else np.nan,
                    f"{name}_ci_low": low, f"{name}_ci_high": high}
        rows.append(row)
    return rows


def write_csv(file: Path, rows: list[dict[str, object]]) -> None:
    with open(file, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(file: Path, rows: list[dict[str, object]], results: list[RunResult],
         metric: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.add_subplot()
    lines = sorted({(r["env"], r["agent"], r["options"]) for r in rows})
    colors = dict(zip(lines, itertools.cycle([f"C{i}" for i in range(10)]), strict=False))
    in_progress_shown = False
    for line in lines:
        color = colors[line]
        mine = [r for r in rows if (r["env"], r["agent"], r["options"]) == line
                and r["finished"]]
        label = ", ".join(str(part) for part in line if part)
        if mine:
            depths = np.array([r["depth"] for r in mine])
            ax.plot(depths, [r["final_mean"] for r in mine], "o-", color=color, label=label)
            ax.fill_between(depths, [r["final_ci_low"] for r in mine],
                            [r["final_ci_high"] for r in mine], color=color, alpha=0.2, lw=0)
        seeds = [r for r in results if (r.env, r.agent, r.options) == line]
        done = [r for r in seeds if r.status == "finished"]
        ax.plot([r.depth for r in done], [r.final for r in done], ".", color=color, alpha=0.5)
        running = [r for r in seeds if r.status == "in progress"]
        if running:
            ax.plot([r.depth for r in running], [r.final for r in running], "o", mfc="none",
                    color=color, label=None if in_progress_shown else "in progress (epochs)")
            in_progress_shown = True
            for r in running:
                ax.annotate(f"{r.epoch}/{r.num_epochs}", (r.depth, r.final), fontsize=7,
                            xytext=(5, -3), textcoords="offset points", color=color)
    depths = sorted({r.depth for r in results if r.depth > 0})
    ax.set_xscale("log", base=2)
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.minorticks_off()
    ax.set_xlabel("depth (Dense layers in residual blocks)")
    ax.set_ylabel("time at goal" if metric == "eval/success" else metric)
    ax.set_title(f"{metric} at the end of training: mean and {CONFIDENCE:.0%} bootstrap "
                 "interval over seeds", fontsize=9)
    ax.grid(alpha=0.3)
    if lines:
        # Below the axes: with several settings per study the labels are long, and inside
        # the axes they hide the curves.
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    fig.savefig(file, dpi=120, bbox_inches="tight")


def _format(value: object) -> str:
    if isinstance(value, float):
        return "-" if np.isnan(value) else f"{value:.3g}"
    return str(value)


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(prog="python -m crl.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path,
                        help="sweep directories, run directories, directories of runs, or "
                             "directories of sweeps (a study)")
    parser.add_argument("-o", "--output", type=Path, default=Path("depth_scaling.png"),
                        help="the figure (PNG, PDF or SVG); the CSV tables go next to it")
    parser.add_argument("--metric", default="eval/success",
                        help="the eval metric to report (default: eval/success, time at goal)")
    args = parser.parse_args(argv)
    try:
        results = collect(args.paths, args.metric)
    except runs.RunError as error:
        fail(str(error))
    rows = aggregate(results)
    output = args.output.expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    runs_table = output.with_name(output.stem + "_runs.csv")
    write_csv(runs_table, [dataclasses.asdict(r) for r in results])
    write_csv(output.with_suffix(".csv"), rows)
    plot(output, rows, results, args.metric)

    shown = ("env", "agent", "options", "depth", "finished", "in_progress", "not_started",
             "final_mean", "final_ci_low", "final_ci_high", "best_mean",
             "final_success_any_mean", "final_success_any_ci_low", "final_success_any_ci_high")
    widths = {k: max(len(k), *(len(_format(r[k])) for r in rows)) for k in shown}
    print("  ".join(k.ljust(widths[k]) for k in shown))
    for row in rows:
        print("  ".join(_format(row[k]).ljust(widths[k]) for k in shown))
    print(f"wrote {output}, {output.with_suffix('.csv')} and {runs_table}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
