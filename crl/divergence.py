"""Divergence guard: after every epoch, the losses and the parameters must be finite.

A deep network that diverges turns its parameters into inf or NaN; checkpointing them would
replace the last good checkpoint with a useless one. The check is one jitted reduction per
parameter array (a few hundred booleans cross to the host), negligible next to an epoch.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp


class Diverged(RuntimeError):
    """A non-finite loss or parameter after ``epoch``; ``quantity`` names it."""

    def __init__(self, epoch: int, quantity: str, last_checkpoint: int | None):
        self.epoch, self.quantity, self.last_checkpoint = epoch, quantity, last_checkpoint
        kept = (f"the last good checkpoint is epoch {last_checkpoint}" if last_checkpoint
                is not None else "no checkpoint was written")
        super().__init__(f"diverged in epoch {epoch}: {quantity} is not finite; nothing of "
                         f"epoch {epoch} was saved and {kept}")


class SeedsDiverged(Diverged):
    """Some seeds of a --seeds group diverged (``diverged``: seed -> its Diverged); the others
    ran on to the end."""

    def __init__(self, diverged: dict[int, Diverged]):
        self.diverged = diverged
        RuntimeError.__init__(self, "; ".join(f"seed {seed} {error}" for seed, error in
                                              diverged.items()) + "; the other seeds went on")


@jax.jit
def _finite_leaves(tree: Any) -> Any:
    return jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), tree)


@jax.jit
def _finite_leaves_per_seed(tree: Any) -> Any:
    return jax.tree.map(lambda x: jnp.all(jnp.isfinite(x), axis=tuple(range(1, x.ndim))), tree)


def _path_name(path: tuple) -> str:
    return "/".join(str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))
                    for key in path)


def _first_non_finite_metric(metrics: dict[str, Any]) -> str | None:
    """The first metric that is not finite (a per-block list: any of its blocks)."""
    def finite(value):
        return all(map(math.isfinite, value)) if isinstance(value, list) else math.isfinite(value)
    return next((name for name, value in metrics.items() if not finite(value)), None)


def first_non_finite(metrics: dict[str, float], tree: dict[str, Any]) -> str | None:
    """The name of the first non-finite metric (``train/critic_loss``) or array of ``tree``
    (``params/critic/sa_encoder/.../kernel``), or None when everything is finite."""
    name = _first_non_finite_metric(metrics)
    if name:
        return name
    flags, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(_finite_leaves(tree)))
    return next((_path_name(path) for path, finite in flags if not finite), None)


def first_non_finite_per_seed(metrics: list[dict[str, float]],
                              tree: dict[str, Any]) -> list[str | None]:
    """``first_non_finite`` of each seed of a --seeds group: ``metrics`` one dict per seed,
    ``tree``'s leaves with a leading seed axis."""
    flags, _ = jax.tree_util.tree_flatten_with_path(
        jax.device_get(_finite_leaves_per_seed(tree)))
    return [_first_non_finite_metric(seed_metrics)
            or next((_path_name(path) for path, finite in flags if not finite[seed]), None)
            for seed, seed_metrics in enumerate(metrics)]
