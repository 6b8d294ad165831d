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


@jax.jit
def _finite_leaves(tree: Any) -> Any:
    return jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), tree)


def _path_name(path: tuple) -> str:
    return "/".join(str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))
                    for key in path)


def first_non_finite(metrics: dict[str, float], tree: dict[str, Any]) -> str | None:
    """The name of the first non-finite metric (``train/critic_loss``) or array of ``tree``
    (``params/critic/sa_encoder/.../kernel``), or None when everything is finite."""
    for name, value in metrics.items():
        if not math.isfinite(value):
            return name
    flags, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(_finite_leaves(tree)))
    return next((_path_name(path) for path, finite in flags if not finite), None)
