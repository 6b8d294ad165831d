"""Goal-conditioned actors, each a ResidualMLP of ``[state, goal]``.

- ``TanhGaussianActor``: a Gaussian over pre-tanh actions (mean, log-std squashed into
  [-5, 2]); the action is tanh of a sample, or tanh(mean) when acting deterministically.
  CRL, SAC and GCBC act with it.
- ``DeterministicActor``: tanh of the network's output (TD3).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from crl.networks.mlp import ResidualMLP

Params = dict[str, Any]

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def sample_tanh_gaussian(key: jax.Array, mean: jax.Array,
                         log_std: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Reparameterised sample: returns (action = tanh(x), pre-tanh x)."""
    x = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)
    return jnp.tanh(x), x


def actor_inputs(state: jax.Array, goal: jax.Array) -> jax.Array:
    """What an actor's residual MLP reads."""
    return jnp.concatenate([state, goal], -1)


@dataclasses.dataclass(frozen=True)
class TanhGaussianActor:
    mlp: ResidualMLP  # out_dim = 2 * action size: mean and raw log-std
    state_size: int
    goal_size: int

    def init(self, key: jax.Array) -> Params:
        return self.mlp.init(key, jnp.zeros((1, self.state_size + self.goal_size)))

    def policy(self, params: Params, state: jax.Array,
               goal: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Mean and log-std of the pre-tanh Gaussian."""
        mean, raw_log_std = jnp.split(self.mlp.apply(params, actor_inputs(state, goal)), 2, axis=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(raw_log_std) + 1)
        return mean, log_std

    def act(self, params: Params, state: jax.Array, goal: jax.Array,
            key: jax.Array | None) -> jax.Array:
        """A sampled action, or the deterministic tanh(mean) when ``key`` is None."""
        mean, log_std = self.policy(params, state, goal)
        return jnp.tanh(mean) if key is None else sample_tanh_gaussian(key, mean, log_std)[0]


@dataclasses.dataclass(frozen=True)
class DeterministicActor:
    mlp: ResidualMLP  # out_dim = action size
    state_size: int
    goal_size: int

    def init(self, key: jax.Array) -> Params:
        return self.mlp.init(key, jnp.zeros((1, self.state_size + self.goal_size)))

    def act(self, params: Params, state: jax.Array, goal: jax.Array) -> jax.Array:
        return jnp.tanh(self.mlp.apply(params, actor_inputs(state, goal)))
