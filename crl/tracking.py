"""Weights & Biases logging (``--wandb``): one wandb step per epoch, the run's id kept in the
run directory so that a resumed run continues the same wandb run.

wandb buffers and retries in its own process when the network is down; should it fail outright,
the run warns once and goes on without it.

``WANDB_MODE=offline`` logs to ``<run>/wandb/`` without an account; ``wandb sync <run>/wandb``
uploads later (the offline directories of a resumed run share its id and sync into one run).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from crl import runs
from crl.config import Config


def wandb_values(metrics: dict[str, Any]) -> dict[str, Any]:
    """Per-block lists (diag/...) as their min, mean and max over blocks: wandb plots
    numbers; metrics.jsonl keeps every block."""
    scalars = {}
    for name, value in metrics.items():
        if isinstance(value, list):
            scalars |= {f"{name}/min": min(value), f"{name}/mean": sum(value) / len(value),
                        f"{name}/max": max(value)}
        else:
            scalars[name] = value
    return scalars


class WandbRun:
    """The wandb run of a run directory; ``history``: the epochs logged so far, sent to wandb
    when the run first uses it (--wandb given only when resuming)."""

    def __init__(self, path: Path, config: Config, history: list[dict[str, Any]]):
        import wandb

        self.failed = False
        first_use = not (path / runs.WANDB_ID_FILE).exists()
        self.run = wandb.init(
            project=config.wandb_project, entity=config.wandb_entity, group=config.wandb_group,
            tags=list(config.wandb_tags), name=path.name, id=runs.wandb_run_id(path),
            resume="allow", dir=str(path), config=dataclasses.asdict(config))
        # A resume may change some fields (learning rates, num_epochs, ...).
        self.run.config.update(dataclasses.asdict(config), allow_val_change=True)
        if first_use:
            for metrics in history:
                self.log(metrics)

    def log(self, metrics: dict[str, Any]) -> None:
        # wandb keeps the first values of an epoch that a resume redoes: its steps only grow.
        if self.failed:
            return
        try:
            if metrics["epoch"] >= self.run.step:
                self.run.log(wandb_values(metrics), step=metrics["epoch"])
        except Exception as error:  # never stop a run for its dashboard
            self._give_up(error)

    def finish(self, preempted: bool = False, failed: bool = False) -> None:
        try:
            if preempted:
                self.run.mark_preempting()
            self.run.finish(exit_code=1 if failed else 0)
        except Exception as error:
            self._give_up(error)

    def _give_up(self, error: Exception) -> None:
        """Stop logging to wandb, with one warning; metrics.jsonl has every epoch anyway."""
        if not self.failed:
            print(f"crl: warning: wandb failed ({type(error).__name__}: "
                  f"{runs.first_line(error)[:200]}); "
                  "training goes on without it and metrics.jsonl keeps every epoch",
                  file=sys.stderr, flush=True)
        self.failed = True
