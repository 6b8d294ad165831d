"""Run directories: the resolved config, one JSON line of metrics per epoch, console progress.

A run directory holds ``config.json`` (the configuration, rewritten when a resume changes it),
``metrics.jsonl`` (one line per epoch; epoch 0 is the initial policy), ``checkpoints/`` (see
crl/checkpoint.py), ``render/`` and, with --wandb, ``wandb/`` and ``wandb_id``. The layout is
described in docs/runs.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from crl.config import Config, ConfigError, config_from_dict, parse_resume_args

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
WANDB_ID_FILE = "wandb_id"


class RunError(ValueError):
    """A run directory that cannot be used as asked; the message is one line."""


def agent_label(config: Config) -> str:
    """The agent of a config as tables and figures name it: ``crl``, ``sac``, ``sac+her``, ..."""
    return config.agent + ("+her" if config.her else "")


def run_label(config: Config) -> str:
    """``<env>_d<depth>_s<seed>`` of a resolved config of the contrastive agent,
    ``<env>_<agent>_d<depth>_s<seed>`` of another (``sac_her`` with HER), with
    ``a<depth>c<depth>`` when the actor's and the critic's depths differ."""
    depth = (f"d{config.depth}" if config.actor_depth == config.critic_depth == config.depth
             else f"a{config.actor_depth}c{config.critic_depth}")
    agent = [] if config.agent == "crl" else [agent_label(config).replace("+", "_")]
    return "_".join([config.env, *agent, depth, f"s{config.seed}"])


def default_run_name(config: Config, timestamp: str) -> str:
    return f"{run_label(config)}_{timestamp}"


def run_path(config: Config) -> Path:
    """The run directory of a config whose ``run_name`` is set."""
    return Path(config.run_dir).expanduser() / config.run_name


def check_new_run(path: Path) -> None:
    """Refuse to start a new run over an existing one's files."""
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"run directory {path} already holds a run; choose another "
                              f"--run-name, remove it, or continue it with --resume {path}")


def create_run(path: Path, config: Config) -> None:
    check_new_run(path)
    path.mkdir(parents=True, exist_ok=True)
    write_config(path, config)


def write_text_atomically(file: Path, text: str) -> None:
    """Replace ``file`` in one rename, so a crash leaves either the old or the new text."""
    partial = file.with_name(file.name + ".partial")
    partial.write_text(text)
    os.replace(partial, file)


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


def resume_config(path: Path, argv: list[str]) -> Config:
    """The configuration of ``python -m crl.train --resume PATH [options]``: the run's own,
    changed by the options given, located at ``path`` (the run may have been moved)."""
    path = Path(path).expanduser()
    # How the processes meet is the launch's business, not the run's: give it again if needed.
    saved = dataclasses.replace(load_config(path), coordinator_address=None, num_processes=None,
                                process_id=None)
    config = parse_resume_args(saved, argv)
    return dataclasses.replace(config, run_dir=str(path.parent), run_name=path.name)


def checkpointed_epochs(path: Path) -> list[int]:
    """The epochs of a run's complete checkpoints, read off the directory names (a checkpoint
    is renamed to its epoch only once it is whole), without opening them."""
    directory = Path(path) / CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    return sorted(int(entry.name) for entry in directory.iterdir() if entry.name.isdigit())


def append_metrics(path: Path, metrics: dict[str, Any]) -> None:
    with open(path / METRICS_FILE, "a") as f:
        f.write(json.dumps(metrics) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    file = Path(path) / METRICS_FILE
    return [json.loads(line) for line in file.read_text().splitlines() if line]


def metrics_until(path: Path, last_epoch: int) -> list[dict[str, Any]]:
    """The metrics of epochs up to ``last_epoch``; a line cut short by a killed process, or one
    of a later epoch (which a resumed run redoes), is left out."""
    file = Path(path) / METRICS_FILE
    kept = []
    for line in (file.read_text().splitlines() if file.exists() else []):
        try:
            metrics = json.loads(line)
        except json.JSONDecodeError:
            continue
        if metrics["epoch"] <= last_epoch:
            kept.append(metrics)
    return kept


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
