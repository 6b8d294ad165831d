"""Run directories: the resolved config, one JSON line of metrics per epoch, console progress.

A run directory holds ``config.json`` (the configuration, rewritten when a resume changes it),
``metrics.jsonl`` (one line per epoch; epoch 0 is the initial policy), ``checkpoints/`` (see
crl/checkpoint.py), ``render/`` and, with --wandb, ``wandb/`` and ``wandb_id``. The layout is
described in docs/runs.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import math
import os
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from crl.config import (
    SEED_MARK,
    Config,
    ConfigError,
    config_from_dict,
    fail,
    parse_resume_args,
    seed_configs,
)

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
WANDB_ID_FILE = "wandb_id"
LOCK_FILE = "lock"
SEEDS_FILE = "seeds.json"  # in each run of a --seeds group: the group's seeds and name
# Exit codes of `python -m crl.train` (2: invalid input, before anything is written), which
# launchers (crl.sweep's jobs) read without importing JAX's side of crl.
EXIT_PREEMPTED = 3  # stopped by a signal (SIGTERM, SIGUSR1/2, Ctrl-C) after checkpointing
EXIT_DIVERGED = 4  # a non-finite loss or parameter: the last good checkpoint is kept
EXIT_WRITE_FAILED = 5  # a file of the run could not be written (disk full): resume once fixed
EXIT_OUT_OF_MEMORY = 6  # a device ran out of memory: what was checkpointed is intact
EXIT_INTERRUPTED = 130  # Ctrl-C outside training, or twice: the last checkpoint is intact


class RunError(ValueError):
    """A run directory that cannot be used as asked; the message is one line."""


class WriteError(RunError):
    """A run's file could not be written (a full disk, a read-only filesystem); what was
    written before is intact."""


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message ('' for none): what a one-line report quotes."""
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def write_error(file: Path, error: OSError) -> WriteError:
    """The one-line error of a failed write of ``file``, with the free space where it goes."""
    try:
        free = shutil.disk_usage(next(p for p in Path(file).parents if p.exists())).free
        free = (f"{free / 2**20:,.0f} MiB" if free >= 2**20 else f"{free / 2**10:,.0f} KiB") \
            + " free there"
    except (OSError, StopIteration):
        free = "its directory is unreadable"
    reason = error.strerror or str(error) or type(error).__name__
    return WriteError(f"cannot write {file}: {reason} ({free}); what the run wrote before is "
                      "intact: free space, then continue with --resume")


class RunLock:
    """An exclusive lock of a run directory, held while a process trains it: ``<run>/lock``,
    locked with ``flock``, which the OS releases when the process ends however it ends, so that
    the lock file a killed process leaves is taken over by the next one. The file records the
    holder (pid, host, start) for the message of a process that finds it taken, and is removed
    when the holder ends normally.

    ``flock`` does not lock across hosts on every network filesystem; on those, two hosts can
    still start the same run."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.file = self.path / LOCK_FILE
        self._fd: int | None = None
        self._created_directory = False

    def __enter__(self) -> RunLock:
        self._created_directory = not self.path.exists()
        while self._fd is None:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise write_error(self.file, error) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(fd)
                if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise write_error(self.file, error) from None
                holder = lock_holder(self.path) or "another process"
                raise RunError(f"{self.path} is in use by {holder}; wait for it to end or stop "
                               "it, then try again") from None
            if self._is_current(fd):
                self._fd = fd
            else:  # its holder removed it between our open and our lock: lock the new one
                os.close(fd)
        holder = (f"pid {os.getpid()} on {socket.gethostname()} since "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
        os.ftruncate(self._fd, 0)
        os.write(self._fd, (holder + "\n").encode())
        return self

    def _is_current(self, fd: int) -> bool:
        try:
            return os.stat(self.file).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def __exit__(self, *_) -> None:
        if self._fd is None:
            return
        self.file.unlink(missing_ok=True)  # still locked: no one else can hold it meanwhile
        os.close(self._fd)
        self._fd = None
        if self._created_directory:  # made for the lock, and used by nothing else
            with contextlib.suppress(OSError):
                self.path.rmdir()


def lock_holder(path: Path) -> str | None:
    """Who holds the lock of run directory ``path`` (``pid N on HOST since ...``), or None when
    no live process does."""
    file = Path(path) / LOCK_FILE
    try:
        fd = os.open(file, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return os.read(fd, 200).decode(errors="replace").strip() or "another process"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def agent_label(config: Config) -> str:
    """The agent of a config as tables and figures name it: ``crl``, ``sac``, ``sac+her``, ..."""
    return config.agent + ("+her" if config.her else "")


def run_label(config: Config, seed: str | None = None) -> str:
    """``<env>_d<depth>_s<seed>`` of a resolved config of the contrastive agent,
    ``<env>_<agent>_d<depth>_s<seed>`` of another (``sac_her`` with HER), with
    ``a<depth>c<depth>`` when the actor's and the critic's depths differ."""
    depth = (f"d{config.depth}" if config.actor_depth == config.critic_depth == config.depth
             else f"a{config.actor_depth}c{config.critic_depth}")
    agent = [] if config.agent == "crl" else [agent_label(config).replace("+", "_")]
    return "_".join([config.env, *agent, depth, f"s{config.seed if seed is None else seed}"])


def default_run_name(config: Config, timestamp: str) -> str:
    """``<label>_<timestamp>``; with --seeds a template holding SEED_MARK."""
    return f"{run_label(config, SEED_MARK if config.seeds else None)}_{timestamp}"


def run_path(config: Config) -> Path:
    """The run directory of a config whose ``run_name`` is set."""
    return Path(config.run_dir).expanduser() / config.run_name


def check_new_run(path: Path) -> None:
    """Refuse to start a new run over an existing one's files."""
    if path.exists() and any(entry.name != LOCK_FILE for entry in path.iterdir()):
        raise FileExistsError(f"run directory {path} already holds a run; choose another "
                              f"--run-name, remove it, or continue it with --resume {path}")


def create_run(path: Path, config: Config, group: Config | None = None) -> None:
    """A run directory holding ``config`` and no metrics (a restart from scratch of a run that
    stopped before its first checkpoint drops the lines it had written); for a run of a
    --seeds ``group``, also the group's seeds and run name template (SEEDS_FILE)."""
    path.mkdir(parents=True, exist_ok=True)
    write_config(path, config)
    write_metrics(path, [])
    if group is not None:
        write_text_atomically(path / SEEDS_FILE, json.dumps(
            {"seeds": list(group.seeds), "run_name": group.run_name}) + "\n")


def remove_run_files(path: Path) -> None:
    """Remove what a new run wrote into ``path``, except the lock its process still holds."""
    for entry in Path(path).iterdir():
        if entry.name != LOCK_FILE:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def write_atomically(file: Path, write: Callable[[Path], None]) -> None:
    """Replace ``file`` in one rename of what ``write(partial path)`` wrote, so a crash or a
    full disk leaves the old file whole (or none, and no partial one)."""
    partial = file.with_name(file.name + ".partial")
    try:
        write(partial)
        os.replace(partial, file)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise write_error(file, error) from None


def write_text_atomically(file: Path, text: str) -> None:
    write_atomically(file, lambda partial: partial.write_text(text))


DATASET_FILE = "buffer.npz"


def write_dataset(path: Path, steps: dict[str, np.ndarray], goal_indices: tuple[int, ...]) -> Path:
    """The replay buffer's steps as ``<run>/buffer.npz`` (``--save-buffer``; docs/runs.md), in one
    rename: a full disk leaves no partial file."""
    file = Path(path) / DATASET_FILE

    def write(partial: Path) -> None:
        with open(partial, "wb") as out:  # a file object: np.savez would add ".npz" to a path
            np.savez(out, **steps, goal_indices=np.asarray(goal_indices, np.int32))

    write_atomically(file, write)
    return file


def write_config(path: Path, config: Config) -> None:
    write_text_atomically(path / CONFIG_FILE, json.dumps(dataclasses.asdict(config), indent=2)
                          + "\n")


def load_config(path: Path) -> Config:
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise RunError(f"no run at {path}: {file} does not exist")
    try:
        return config_from_dict(json.loads(file.read_text()))
    except (json.JSONDecodeError, ConfigError, TypeError) as error:
        raise RunError(f"{file} is not a readable crl configuration: {error}") from None


def read_seed_group(path: Path) -> tuple[tuple[int, ...], str] | None:
    """The seeds and run name template of the --seeds group of run ``path``, or None."""
    file = Path(path) / SEEDS_FILE
    if not file.is_file():
        return None
    try:
        group = json.loads(file.read_text())
        return tuple(int(seed) for seed in group["seeds"]), str(group["run_name"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunError(f"{file} is not a readable seed group: {error}") from None


def resume_config(path: Path, argv: list[str]) -> Config:
    """The configuration of ``python -m crl.train --resume PATH [options]``: the run's own,
    changed by the options given, located at ``path`` (the run may have been moved). A run of
    a --seeds group resumes the group (its run directories beside ``path``), or the seeds that
    ``--seeds`` names among them."""
    path = Path(path).expanduser()
    # How the processes meet is the launch's business, not the run's: give it again if needed.
    saved = dataclasses.replace(load_config(path), coordinator_address=None, num_processes=None,
                                process_id=None, run_dir=str(path.parent), run_name=path.name)
    group = read_seed_group(path)
    if group and group[1].replace(SEED_MARK, str(saved.seed)) == path.name:  # not renamed
        saved = dataclasses.replace(saved, seeds=group[0], run_name=group[1])
    config = parse_resume_args(saved, argv)
    others = sorted(set(config.seeds) - set(saved.seeds))
    if others:
        fail(f"seeds {' '.join(map(str, others))} are not runs of the group of {path} (seeds "
             f"{' '.join(map(str, saved.seeds)) or str(saved.seed)}); start them as a new run")
    return config


def seed_run_paths(config: Config) -> list[Path]:
    """The run directory of each run of ``config`` (one, or one per seed of --seeds)."""
    return [run_path(one) for one in seed_configs(config)]


def checkpointed_epochs(path: Path) -> list[int]:
    """The epochs of a run's complete checkpoints, read off the directory names (a checkpoint
    is renamed to its epoch only once it is whole), without opening them."""
    directory = Path(path) / CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    return sorted(int(entry.name) for entry in directory.iterdir() if entry.name.isdigit())


def append_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """Add one line to metrics.jsonl; a failed write (a full disk) is undone, so the file never
    ends in a partial line."""
    file = Path(path) / METRICS_FILE
    line = (json.dumps(metrics) + "\n").encode()
    try:
        fd = os.open(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as error:
        raise write_error(file, error) from None
    size = os.fstat(fd).st_size
    try:
        written = 0
        while written < len(line):  # a nearly full disk takes part of a write
            written += os.write(fd, line[written:])
        os.fsync(fd)
    except OSError as error:
        os.ftruncate(fd, size)
        raise write_error(file, error) from None
    finally:
        os.close(fd)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every epoch's metrics of a run (``[]`` without metrics.jsonl). A last line cut short (a
    process killed mid-write) is left out; a damaged line before it is an error naming it.
    Every reader of metrics goes through here."""
    file = Path(path) / METRICS_FILE
    try:
        lines = file.read_text().splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as error:
        raise RunError(f"cannot read {file}: {error}") from None
    history = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            metrics = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # a write cut short
                break
            raise RunError(f"{file} line {number} is damaged (not JSON); repair or delete that "
                           "line") from None
        if not isinstance(metrics, dict) or "epoch" not in metrics:
            raise RunError(f"{file} line {number} is not one epoch's metrics (no 'epoch')")
        history.append(metrics)
    return history


def metrics_until(path: Path, last_epoch: int) -> list[dict[str, Any]]:
    """The metrics of epochs up to ``last_epoch`` (those of later epochs, which a resumed run
    redoes, are left out)."""
    return [metrics for metrics in read_metrics(path) if metrics["epoch"] <= last_epoch]


def write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    write_text_atomically(Path(path) / METRICS_FILE,
                          "".join(json.dumps(metrics) + "\n" for metrics in history))


def wandb_run_id(path: Path) -> str:
    """The run's Weights & Biases id, created on first use (the one a `wandb agent` chose for
    a run of a wandb sweep): a resumed run logs to the same one."""
    file = Path(path) / WANDB_ID_FILE
    if not file.exists():
        write_text_atomically(file, os.environ.get("WANDB_RUN_ID", secrets.token_hex(4)) + "\n")
    return file.read_text().strip()


class Progress:
    """One console line per epoch: a bar, env steps/s since the (re)start, time left."""

    def __init__(self, total_epochs: int, first_epoch: int = 0, first_env_steps: int = 0,
                 stream=sys.stderr):
        self.total = total_epochs
        self.first_epoch, self.first_env_steps = first_epoch, first_env_steps
        self.stream = stream
        self.started = time.monotonic()

    def update(self, epoch: int, env_steps: int, metrics: dict[str, Any]) -> None:
        elapsed = time.monotonic() - self.started
        done = (epoch - self.first_epoch) / max(self.total - self.first_epoch, 1)
        width = 20
        filled = round(epoch / self.total * width)
        bar = "#" * filled + "-" * (width - filled)
        left = elapsed / done * (1 - done) if done else math.inf
        shown = " ".join(f"{k.split('/')[-1]}={metrics[k]:.3g}" for k in
                         ("eval/success", "eval/success_any", "eval/dist", "train/critic_loss")
                         if k in metrics)
        rate = (env_steps - self.first_env_steps) / max(elapsed, 1e-9)
        print(f"[{bar}] epoch {epoch}/{self.total} | {env_steps:,} env steps | "
              f"{rate:,.0f} steps/s | left {_duration(left)} | {shown}", file=self.stream,
              flush=True)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
