"""Run directories: the resolved config, one JSON line of metrics per epoch, console progress."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from crl.config import Config

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"


def default_run_name(config: Config, timestamp: str) -> str:
    depth = (f"d{config.depth}" if config.actor_depth == config.critic_depth == config.depth
             else f"a{config.actor_depth}c{config.critic_depth}")
    return f"{config.env}_{depth}_s{config.seed}_{timestamp}"


def run_path(config: Config) -> Path:
    """The run directory of a config whose ``run_name`` is set."""
    return Path(config.run_dir).expanduser() / config.run_name


def check_new_run(path: Path) -> None:
    """Refuse to start a new run over an existing one's files."""
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"run directory {path} already holds a run; choose another "
                              "--run-name or remove it")


def create_run(path: Path, config: Config) -> None:
    check_new_run(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")


def load_config(path: Path) -> Config:
    return Config(**json.loads((Path(path) / CONFIG_FILE).read_text()))


def append_metrics(path: Path, metrics: dict[str, Any]) -> None:
    with open(path / METRICS_FILE, "a") as f:
        f.write(json.dumps(metrics) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    file = Path(path) / METRICS_FILE
    return [json.loads(line) for line in file.read_text().splitlines() if line]


class Progress:
    """One console line per epoch: a bar, env steps/s over the training so far, time left."""

    def __init__(self, total_epochs: int, stream=sys.stderr):
        self.total = total_epochs
        self.stream = stream
        self.started = time.monotonic()

    def update(self, epoch: int, env_steps: int, metrics: dict[str, Any]) -> None:
        elapsed = time.monotonic() - self.started
        done = epoch / self.total
        width = 20
        bar = "#" * round(done * width) + "-" * (width - round(done * width))
        left = elapsed / done * (1 - done) if done else math.inf
        shown = " ".join(f"{k.split('/')[-1]}={metrics[k]:.3g}" for k in
                         ("eval/success", "eval/success_any", "eval/dist", "critic_loss")
                         if k in metrics)
        print(f"[{bar}] epoch {epoch}/{self.total} | {env_steps:,} env steps | "
              f"{env_steps / max(elapsed, 1e-9):,.0f} steps/s | left {_duration(left)} | "
              f"{shown}", file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
