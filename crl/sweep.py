"""Sweeps: ``python -m crl.sweep --env ant_big_maze --depths 4 8 16 32 64 --seeds 0 1 2``.

One training run per point of a grid, each in ``<run-dir>/<name>/<env>_d<depth>_s<seed>[...]``,
launched through submitit: a Slurm job array (``--launcher slurm``), or local processes, a
bounded number at a time (``--launcher local``, the default), while this command waits.

Every option that is not the sweep's own is a ``python -m crl.train`` option; given several
values (``--width 256 512``) it is swept too. ``--depths`` and ``--seeds`` are the two usual
axes. Every point is validated before anything is launched or written.

A job resumes its run from its latest checkpoint when there is one, so a job that is requeued
(Slurm preemption, or the time limit: submitit sends SIGUSR2, the job passes it on to the
training process, which checkpoints its epoch, and submitit requeues the job) continues where
it stopped, and re-running the same sweep command skips finished runs and resumes the others.
With ``--vectorize-seeds``, the seeds of each point of the grid train together in one job (one
``python -m crl.train --seeds ...`` process, into the same run directories as without it).
``--dry-run`` prints the plan; ``--wandb-sweep`` writes a Weights & Biases sweep of the same grid
instead of launching. ``python -m crl.report <run-dir>/<name>`` aggregates the results.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import submitit

from crl import runs
from crl.config import (
    SEED_MARK,
    Config,
    ConfigError,
    check_device_split,
    check_option,
    fail,
    parse_args,
)

SWEEP_FILE = "sweep.json"
SUBMITIT_DIR = "submitit"
WANDB_SWEEP_FILE = "wandb_sweep.yaml"
# Options of python -m crl.train that the sweep sets itself.
RESERVED = {"--run-dir": "give --run-dir to the sweep: runs go to <run-dir>/<name>/",
            "--run-name": "the sweep names each run after its point of the grid",
            "--resume": "re-run the sweep command: it resumes unfinished runs"}
SWEPT_BY_DEFAULT = {"--depths": "depth", "--seeds": "seed"}


# ---------------------------------------------------------------- the grid
@dataclasses.dataclass(frozen=True)
class SweepRun:
    name: str
    values: dict[str, str]  # swept field -> value, as given on the command line
    args: tuple[str, ...]  # python -m crl.train options of this point of the grid
    config: Config
    template: str  # ``name`` with SEED_MARK for its seed: the name of each of its seeds

    def train_args(self, sweep_dir: Path) -> list[str]:
        return [*self.args, "--run-dir", str(sweep_dir), "--run-name", self.name]


@dataclasses.dataclass(frozen=True)
class SweepJob:
    """What one job trains: one run, or (``vectorized``) runs that differ only in their seed,
    together in one process with ``--seeds``."""
    runs: tuple[SweepRun, ...]
    vectorized: bool = False

    @property
    def name(self) -> str:
        if not self.vectorized:
            return self.runs[0].name
        seeds = ",".join(str(run.config.seed) for run in self.runs)
        return self.runs[0].template.replace(SEED_MARK, "{" + seeds + "}")

    def train_args(self, sweep_dir: Path) -> list[str]:
        """The options of a new start (TrainJob adds the seeds still to train)."""
        if not self.vectorized:
            return self.runs[0].train_args(sweep_dir)
        args = list(self.runs[0].args)
        at = args.index("--seed")
        del args[at:at + 2]
        return [*args, "--run-dir", str(sweep_dir), "--run-name", self.runs[0].template]

    def command(self, sweep_dir: Path) -> list[str]:
        seeds = ["--seeds", *(str(run.config.seed) for run in self.runs)] if self.vectorized \
            else []
        return [*self.train_args(sweep_dir), *seeds]

    def train_job(self, sweep_dir: Path, environment: dict[str, str | None] | None = None,
                  stop_timeout_s: float = 600) -> TrainJob:
        paths = [str(sweep_dir / run.name) for run in self.runs]
        return TrainJob(paths if self.vectorized else paths[0], self.train_args(sweep_dir),
                        environment, stop_timeout_s,
                        seeds=[run.config.seed for run in self.runs] if self.vectorized
                        else None)


def make_jobs(todo: list[SweepRun], sweep_dir: Path, vectorize: bool) -> list[SweepJob]:
    """One job per run, or with ``vectorize`` one per point of the grid without its seed and per
    state of its runs: those never started together, and those started together by latest
    checkpoint (a group resumes from one epoch)."""
    if not vectorize:
        return [SweepJob((run,)) for run in todo]
    cohorts: dict[tuple, list[SweepRun]] = {}
    for run in todo:
        path = sweep_dir / run.name
        started = (path / runs.CONFIG_FILE).is_file()
        epochs = runs.checkpointed_epochs(path) if started else []
        latest = epochs[-1] if epochs else None
        cohorts.setdefault((run.template, started, latest), []).append(run)
    return [SweepJob(tuple(members), vectorized=True) for members in cohorts.values()]


def group_options(argv: list[str]) -> list[tuple[str, list[str]]]:
    """``['--a', '1', '2', '--b=3', '--c']`` -> ``[('--a', ['1', '2']), ('--b', ['3']),
    ('--c', [])]``."""
    groups: list[tuple[str, list[str]]] = []
    for token in argv:
        if token.startswith("--"):
            flag, has_value, value = token.partition("=")
            groups.append((flag, [value] if has_value else []))
        elif groups:
            groups[-1][1].append(token)
        else:
            fail(f"unexpected argument {token!r}: options start with --")
    return groups


def _field_of(flag: str) -> str:
    return flag[2:].replace("-", "_")


def check_train_flag(flag: str) -> None:
    """Refuse a flag that python -m crl.train does not take, or that the sweep sets itself."""
    if flag in RESERVED:
        fail(f"{flag} cannot be given to a sweep: {RESERVED[flag]}")
    check_option(flag, extra=("--preset", *SWEPT_BY_DEFAULT),
                 where="python -m crl.sweep --help and python -m crl.train")


def split_axes(groups: list[tuple[str, list[str]]]) -> tuple[list[str], dict[str, list[str]]]:
    """Train options given once (``base``, as tokens) and swept ones (``axes``: flag -> values).
    Depth and seed are always axes, even with one value, so that a later command can add
    depths or seeds to the same sweep."""
    base: list[str] = []
    axes: dict[str, list[str]] = {}
    tuple_fields = {f.name for f in dataclasses.fields(Config) if "tuple" in str(f.type)}
    # Sorted: the same options in another order are the same sweep.
    for flag, values in sorted(groups, key=lambda group: group[0]):
        flag = {"--depths": "--depth", "--seeds": "--seed"}.get(flag, flag)
        if flag in axes or flag in base:
            fail(f"{flag} is given twice")
        if flag in ("--depth", "--seed") and len(values) == 1:
            axes[flag] = values
        elif len(values) > 1 and _field_of(flag) not in tuple_fields and flag != "--preset":
            if len(set(values)) < len(values):
                fail(f"{flag} {' '.join(values)} repeats a value")
            axes[flag] = values
        else:
            base += [flag, *values]
    return base, axes


def build_grid(base: list[str], axes: dict[str, list[str]]) -> list[SweepRun]:
    """Every point of the grid, validated (one line and exit code 2 at the first bad point)."""
    grid = []
    names: dict[str, dict[str, str]] = {}
    for point in itertools.product(*axes.values()):
        values = dict(zip(axes, point, strict=True))
        swept = [token for flag, value in values.items() for token in (flag, value)]
        config = parse_args([*base, *swept])
        label = runs.run_label(config)
        extra = [f"{_field_of(flag)}-{value}" for flag, value in values.items()
                 if flag not in ("--depth", "--seed", "--env", "--agent")]
        name = "_".join([label, *extra]).replace("/", "-")
        template = "_".join([runs.run_label(config, SEED_MARK), *extra]).replace("/", "-")
        if name in names:
            fail(f"two points of the grid ({names[name]} and {values}) are the same run {name}")
        names[name] = values
        grid.append(SweepRun(name, {_field_of(f): v for f, v in values.items()},
                             (*base, *swept), config, template))
    return grid


# ---------------------------------------------------------------- one job
def run_status(path: Path) -> str:
    """``new``, ``resume`` (complete checkpoints, not yet of the last epoch), ``finished`` or
    ``running`` (a live process holds the run's lock)."""
    if runs.lock_holder(path):
        return "running"
    epochs = runs.checkpointed_epochs(path)
    if not epochs or not (path / runs.CONFIG_FILE).is_file():
        return "new"
    return "finished" if epochs[-1] >= runs.load_config(path).num_epochs else "resume"


class TrainJob(submitit.helpers.Checkpointable):
    """One run of a sweep, as a submitit job: ``python -m crl.train`` in a child process,
    started afresh or resumed from the run's latest checkpoint.

    When submitit signals the job (the time limit is near, or a preemption), ``checkpoint``
    asks the training process to stop (SIGUSR1: it finishes its epoch and checkpoints), waits
    for it, and returns this job again for submitit to requeue: the requeued job resumes.
    ``environment``: variables set (or, with None, removed) for the training process.

    With ``seeds``, ``run_path`` is a list: the runs of those seeds, trained together with
    ``--seeds`` (the finished ones left out, the started ones resumed as a group).
    """

    def __init__(self, run_path: str | list[str], train_args: list[str],
                 environment: dict[str, str | None] | None = None, stop_timeout_s: float = 600,
                 seeds: list[int] | None = None):
        self.run_path, self.train_args = run_path, list(train_args)
        self.environment = dict(environment or {})
        self.stop_timeout_s = stop_timeout_s
        self.seeds = seeds
        self._child: subprocess.Popen | None = None

    @property
    def _paths(self) -> list[Path]:
        return [Path(p) for p in (self.run_path if self.seeds is not None else [self.run_path])]

    def __call__(self) -> dict[str, Any]:
        self.start()
        return self.wait()

    def start(self) -> None:
        remaining = [(path, seed) for path, seed in zip(self._paths, self.seeds or [None],
                                                       strict=True)
                     if run_status(path) != "finished"]
        if not remaining:
            return
        # A run with a config (even one stopped before its first checkpoint, which crl.train
        # then starts from scratch) is resumed; nothing of a run directory is ever deleted
        # here. One still running makes crl.train refuse in one line.
        started = [path for path, _ in remaining if (path / runs.CONFIG_FILE).is_file()]
        args = ["--resume", str(started[0])] if started else self.train_args
        if self.seeds is not None:
            args = [*args, "--seeds", *(str(seed) for _, seed in remaining)]
        env = {**os.environ, **{k: v for k, v in self.environment.items() if v is not None}}
        for name in (k for k, v in self.environment.items() if v is None):
            env.pop(name, None)
        self._child = subprocess.Popen([sys.executable, "-m", "crl.train", *args], env=env)

    def wait(self) -> dict[str, Any]:
        """Wait for the training process; the run's last metrics, or an error naming the run,
        the exit code and what to do."""
        if self._child is not None:
            # Polled, not a blocking wait, so that checkpoint() can run in a signal handler.
            while self._child.poll() is None:
                time.sleep(1.0)
            code = self._child.returncode
            if code == runs.EXIT_PREEMPTED:
                raise RuntimeError(f"{self.run_path} was stopped by a signal and checkpointed; "
                                   "re-run the sweep command (or requeue) to resume it")
            if code == runs.EXIT_DIVERGED:
                raise RuntimeError(f"{self.run_path} diverged (exit code {code}); see its log")
            if code != 0:
                raise RuntimeError(f"python -m crl.train for {self.run_path} exited with code "
                                   f"{code}; re-run the sweep command to resume it")
        last = []
        for path in self._paths:
            metrics = runs.read_metrics(path)
            if not metrics:
                raise RuntimeError(f"{path} logged no metrics; see its log")
            last.append(metrics[-1])
        if len(last) == 1:
            return {"run": self.run_path, **last[0]}
        shared = [k for k in last[0] if all(isinstance(m.get(k), (int, float)) for m in last)]
        return {"run": self.run_path, **{k: sum(m[k] for m in last) / len(last)
                                         for k in shared}}

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        child = self._child
        if child is not None and child.returncode is None:
            os.kill(child.pid, signal.SIGUSR1)
            deadline = time.monotonic() + self.stop_timeout_s
            # os.waitpid, not child.wait(): the interrupted code may hold Popen's wait lock.
            while time.monotonic() < deadline:
                try:
                    if os.waitpid(child.pid, os.WNOHANG)[0]:
                        break
                except ChildProcessError:  # already reaped
                    break
                time.sleep(0.5)
        again = TrainJob(self.run_path, self.train_args, self.environment, self.stop_timeout_s,
                         self.seeds)
        return submitit.helpers.DelayedSubmission(again)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_child": None}


# ---------------------------------------------------------------- launchers
def _sweep_options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m crl.sweep", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
        epilog="Any other option is a python -m crl.train option; with several values it is "
               "swept: e.g. --width 256 512.")
    parser.add_argument("--depths", nargs="+", help="depths to sweep (train's --depth)")
    parser.add_argument("--seeds", nargs="+", help="seeds to sweep (train's --seed)")
    parser.add_argument("--name", default=None,
                        help="sweep directory name under --run-dir (default: sweep_<env>)")
    parser.add_argument("--run-dir", default="runs", help="parent of the sweep directory")
    parser.add_argument("--launcher", choices=("local", "slurm"), default="local")
    parser.add_argument("--vectorize-seeds", action="store_true",
                        help="train the seeds of each point in one job, vectorised (python -m "
                             "crl.train --seeds): fewer jobs and GPUs, the same runs")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the jobs and what each would do; launch and write nothing")
    parser.add_argument("--wandb-sweep", action="store_true",
                        help="write a wandb sweep configuration of the grid instead (then "
                             "`wandb sweep` it and start `wandb agent`s)")
    local = parser.add_argument_group("local launcher")
    local.add_argument("--max-parallel", type=int, default=1,
                       help="runs at a time on this machine (default: 1)")
    slurm = parser.add_argument_group("slurm launcher (one job array)")
    slurm.add_argument("--partition")
    slurm.add_argument("--account")
    slurm.add_argument("--qos")
    slurm.add_argument("--constraint", help="e.g. a100|h100")
    slurm.add_argument("--gpus-per-job", type=int, default=None,
                       help="GPUs of each run (slurm default: 1; local default: every GPU the "
                            "sweep sees, shared by the runs)")
    slurm.add_argument("--cpus-per-job", type=int, default=8)
    slurm.add_argument("--mem-gb", type=int, default=64)
    slurm.add_argument("--time-min", type=int, default=24 * 60,
                       help="time limit of a job in minutes; a run that needs longer is "
                            "requeued and resumes (default: one day)")
    slurm.add_argument("--array-parallelism", type=int, default=256,
                       help="jobs of the array running at once")
    slurm.add_argument("--signal-delay-s", type=int, default=300,
                       help="how long before the time limit the job is asked to checkpoint: "
                            "at least one epoch plus a checkpoint write")
    slurm.add_argument("--max-requeues", type=int, default=10,
                       help="how many times a job may reach its time limit and be requeued")
    slurm.add_argument("--setup", action="append", default=[],
                       help="a shell line run before each job, e.g. 'module load cuda' "
                            "(repeatable)")
    return parser


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str], dict[str, list[str]]]:
    """Sweep options, train options given once (tokens) and swept train options."""
    own_flags = {a for action in _sweep_options()._actions for a in action.option_strings}
    own, train = [], []
    for flag, values in group_options(argv):
        if flag in own_flags:
            own += [flag, *values]
        else:
            check_train_flag(flag)
            train.append((flag, values))
    args = _sweep_options().parse_args(own)
    for flag, values in (("--depths", args.depths), ("--seeds", args.seeds)):
        if values:
            train.append((flag, values))
    if args.max_parallel < 1:
        fail(f"--max-parallel {args.max_parallel} must be at least 1")
    base, axes = split_axes(train)
    return args, base, axes


def check_devices(grid: list[SweepRun], args: argparse.Namespace) -> None:
    """Refuse sizes that the devices of each job cannot split, when the sweep knows how many a
    job gets (--gpus-per-job, or Slurm's default of one); jobs that share this machine's
    devices check at their start, in one line, since counting them here would take the GPUs."""
    devices = args.gpus_per_job or (1 if args.launcher == "slurm" else None)
    if devices:
        for run in grid:
            try:
                check_device_split(run.config, devices)
            except ConfigError as error:
                fail(f"{run.name}: {error} of each job (--gpus-per-job {devices})")


def _sweep_dir(args: argparse.Namespace, grid: list[SweepRun]) -> Path:
    envs = "+".join(dict.fromkeys(run.config.env for run in grid))
    return Path(args.run_dir).expanduser().absolute() / (args.name or f"sweep_{envs}")


def read_sweep(sweep_dir: Path) -> dict[str, Any] | None:
    file = sweep_dir / SWEEP_FILE
    return json.loads(file.read_text()) if file.is_file() else None


def _record(sweep_dir: Path, base: list[str], grid: list[SweepRun], argv: list[str],
            jobs: dict[str, str] | None = None) -> None:
    """sweep.json: the options every run shares, and every run of the sweep so far (a re-run
    with more depths or seeds adds to it), with its Slurm job id once submitted."""
    saved = read_sweep(sweep_dir) or {"base": base, "runs": {}, "commands": []}
    if saved["base"] != base:
        fail(f"{sweep_dir} holds a sweep with other options ({shlex.join(saved['base'])}); "
             f"a sweep's runs share their options: choose another --name")
    for run in grid:
        entry = saved["runs"].setdefault(run.name, {
            "env": run.config.env, "agent": runs.agent_label(run.config),
            "depth": run.config.depth, "seed": run.config.seed,
            "values": run.values})
        if jobs and run.name in jobs:
            entry["job"] = jobs[run.name]
    command = shlex.join(["python", "-m", "crl.sweep", *argv])
    if command not in saved["commands"]:
        saved["commands"].append(command)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    runs.write_text_atomically(sweep_dir / SWEEP_FILE, json.dumps(saved, indent=2) + "\n")


def _slurm_job_active(sweep_dir: Path, job_id: str | None) -> str | None:
    """The Slurm state of a job submitted earlier if it is still queued or running."""
    if not job_id:
        return None
    try:
        state = submitit.SlurmJob(sweep_dir / SUBMITIT_DIR, job_id).state
    except Exception:  # no sacct here: nothing known
        return None
    return state if state in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING",
                              "COMPLETING", "SUSPENDED") else None


def plan(grid: list[SweepRun], sweep_dir: Path, launcher: str) -> list[tuple[SweepRun, str]]:
    """What to do with each run: ``new``, ``resume``, ``finished`` or an active Slurm state."""
    saved = (read_sweep(sweep_dir) or {"runs": {}})["runs"]
    planned = []
    for run in grid:
        active = (_slurm_job_active(sweep_dir, saved.get(run.name, {}).get("job"))
                  if launcher == "slurm" else None)
        planned.append((run, active or run_status(sweep_dir / run.name)))
    return planned


def _describe(status: str, path: Path) -> str:
    if status == "resume":
        return f"resume after epoch {runs.checkpointed_epochs(path)[-1]}"
    if status == "finished":
        return "finished: skipped"
    if status == "running":
        return f"running ({runs.lock_holder(path) or 'ended just now'}): skipped"
    return "new" if status == "new" else f"Slurm job {status.lower()}: skipped"


def slurm_executor(args: argparse.Namespace, sweep_dir: Path, jobs: int) -> submitit.Executor:
    executor = submitit.SlurmExecutor(folder=sweep_dir / SUBMITIT_DIR / "%j",
                                      max_num_timeout=args.max_requeues)
    given = {"partition": args.partition, "account": args.account, "qos": args.qos,
             "constraint": args.constraint}
    executor.update_parameters(
        job_name=sweep_dir.name, time=args.time_min,
        gpus_per_node=1 if args.gpus_per_job is None else args.gpus_per_job,
        ntasks_per_node=1, cpus_per_task=args.cpus_per_job, mem=f"{args.mem_gb}GB",
        signal_delay_s=args.signal_delay_s, array_parallelism=min(args.array_parallelism, jobs),
        setup=args.setup, **{k: v for k, v in given.items() if v is not None},
        # Preempted jobs go back to the queue (where the cluster requeues on preemption), and
        # submitit's own requeue near the time limit is allowed on every cluster.
        additional_parameters={"requeue": True})
    return executor


def launch_slurm(args: argparse.Namespace, todo: list[SweepJob],
                 sweep_dir: Path) -> dict[str, str]:
    """Submit one job array; returns run name -> job id."""
    executor = slurm_executor(args, sweep_dir, len(todo))
    stop_timeout = max(args.signal_delay_s - 30, 10)
    with executor.batch():
        submitted = [executor.submit(job.train_job(sweep_dir, stop_timeout_s=stop_timeout))
                     for job in todo]
    for job, slurm_job in zip(todo, submitted, strict=True):
        print(f"  {slurm_job.job_id:>14}  {job.name}")
    print(f"submitted {len(todo)} jobs as a Slurm array; logs in {sweep_dir / SUBMITIT_DIR}; "
          f"`squeue --me` to follow, python -m crl.report {sweep_dir} to see the results")
    return {run.name: slurm_job.job_id for job, slurm_job in zip(todo, submitted, strict=True)
            for run in job.runs}


def launch_local(args: argparse.Namespace, todo: list[SweepJob], sweep_dir: Path) -> int:
    """Run the jobs as local processes, ``--max-parallel`` at a time; returns the failures."""
    executor = submitit.LocalExecutor(folder=sweep_dir / SUBMITIT_DIR)
    executor.update_parameters(timeout_min=args.time_min, signal_delay_s=args.signal_delay_s)
    gpus = args.gpus_per_job
    pending, running, failed, done = list(todo), {}, 0, 0
    free_slots = list(range(args.max_parallel))
    while pending or running:
        while pending and free_slots:
            sweep_job, slot = pending.pop(0), free_slots.pop(0)
            if gpus:  # each slot gets its own GPUs
                executor.update_parameters(gpus_per_node=gpus, visible_gpus=tuple(
                    range(slot * gpus, (slot + 1) * gpus)))
                environment = {}
            else:  # the runs see the devices this command sees
                environment = {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}
            job = executor.submit(sweep_job.train_job(sweep_dir, environment,
                                                max(args.signal_delay_s - 30, 10)))
            running[job] = (sweep_job, slot)
            print(f"started {sweep_job.name} (local job {job.job_id}, log {job.paths.stdout})",
                  flush=True)
        time.sleep(0.5)
        for job in [job for job in running if job.done()]:
            sweep_job, slot = running.pop(job)
            free_slots.append(slot)
            done += 1
            error = job.exception()
            if error is None:
                result = job.result()
                shown = " ".join(f"{k}={result[k]:.3g}" for k in ("eval/success",
                                                                   "eval/success_any")
                                 if k in result)
                print(f"[{done}/{len(todo)}] {sweep_job.name} finished: {shown}", flush=True)
            else:
                failed += 1
                reason = str(error).strip().splitlines()[-1]
                print(f"[{done}/{len(todo)}] {sweep_job.name} FAILED: {reason} (log: "
                      f"{job.paths.stderr})", flush=True)
    return failed


def write_wandb_sweep(file: Path, base: list[str], axes: dict[str, list[str]],
                      sweep_dir: Path) -> None:
    """A wandb grid sweep of the same runs: the swept options as parameters, everything else in
    the command, which logs to wandb and writes its runs under the sweep directory."""
    import yaml

    def value(text: str) -> Any:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text

    config = parse_args(list(base) + [t for f, v in axes.items() for t in (f, v[0])])
    spec = {
        "name": sweep_dir.name,
        "project": config.wandb_project,
        "method": "grid",
        "metric": {"name": "eval/success", "goal": "maximize"},
        "parameters": {flag[2:]: {"values": [value(v) for v in values]}
                       for flag, values in axes.items()},
        "command": ["${env}", "${interpreter}", "-m", "crl.train",
                    *([] if config.wandb else ["--wandb"]), *base, "--run-dir", str(sweep_dir),
                    "${args}"],
    }
    if config.wandb_entity:
        spec["entity"] = config.wandb_entity
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(yaml.safe_dump(spec, sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, base, axes = parse(argv)
    grid = build_grid(base, axes)  # every point validated before anything else
    check_devices(grid, args)
    sweep_dir = _sweep_dir(args, grid)

    if args.wandb_sweep:
        file = sweep_dir / WANDB_SWEEP_FILE
        if args.dry_run:
            print(f"would write a wandb sweep of {len(grid)} runs to {file}")
            return 0
        write_wandb_sweep(file, base, axes, sweep_dir)
        print(f"wrote {file} ({len(grid)} runs); start it with:\n  wandb sweep {file}\n"
              f"  wandb agent <the sweep id it prints>")
        return 0

    if args.launcher == "slurm" and not args.dry_run:
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if missing:
            fail(f"--launcher slurm needs Slurm's {' and '.join(missing)} on PATH (run the "
                 "sweep on a login node of the cluster); --launcher local runs it here")
    planned = plan(grid, sweep_dir, args.launcher)
    print(f"sweep {sweep_dir}: {len(grid)} runs, {args.launcher} launcher")
    for run, status in planned:
        print(f"  {run.name:<40} {_describe(status, sweep_dir / run.name)}")
    todo = make_jobs([run for run, status in planned if status in ("new", "resume")],
                     sweep_dir, args.vectorize_seeds)
    if args.dry_run:
        for job in todo:
            print("  python -m crl.train " + shlex.join(job.command(sweep_dir)))
        print(f"dry run: {len(todo)} jobs would be launched")
        return 0
    _record(sweep_dir, base, grid, argv)
    if not todo:
        print(f"nothing to run; python -m crl.report {sweep_dir} shows the results")
        return 0
    if args.launcher == "slurm":
        _record(sweep_dir, base, grid, argv, launch_slurm(args, todo, sweep_dir))
        return 0
    failed = launch_local(args, todo, sweep_dir)
    unit = "jobs" if args.vectorize_seeds else "runs"
    if failed:
        print(f"{failed} of {len(todo)} {unit} failed; re-run the same command to resume them")
        return 1
    print(f"all {len(todo)} {unit} finished; python -m crl.report {sweep_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
