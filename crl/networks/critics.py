"""Twin Q-critics Q_i(s, a, g), i = 1, 2, for the TD baselines (SAC, TD3).

Both critics are one ResidualMLP of ``[state, action, goal]`` with their parameters stacked along
a leading axis of size 2 and applied with ``vmap``: one network is traced whatever the depth and
the number of critics, so compile time stays flat.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from crl.networks.mlp import ResidualMLP

Params = dict[str, Any]
NUM_CRITICS = 2


@dataclasses.dataclass(frozen=True)
class TwinQ:
    mlp: ResidualMLP  # out_dim = 1
    state_size: int
    action_size: int
    goal_size: int

    def init(self, key: jax.Array) -> Params:
        example = jnp.zeros((1, self.state_size + self.action_size + self.goal_size))
        return jax.vmap(lambda k: self.mlp.init(k, example))(jax.random.split(key, NUM_CRITICS))

    @staticmethod
    def inputs(state: jax.Array, action: jax.Array, goal: jax.Array) -> jax.Array:
        """What the critics' residual MLP reads."""
        return jnp.concatenate([state, action, goal], -1)

    def __call__(self, params: Params, state: jax.Array, action: jax.Array,
                 goal: jax.Array) -> jax.Array:
        """Every critic's value: ``[2, B]``."""
        inputs = self.inputs(state, action, goal)
        return jax.vmap(lambda p: self.mlp.apply(p, inputs)[..., 0])(params)
