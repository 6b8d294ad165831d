"""The three networks of contrastive RL, each a ResidualMLP.

- state-action encoder phi(s, a) -> R^repr_dim
- goal encoder psi(g) -> R^repr_dim
- actor pi(s, g) -> tanh-Gaussian over actions (``crl.networks.actors.TanhGaussianActor``)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from crl.networks.actors import (
    LOG_STD_MAX,
    LOG_STD_MIN,
    Params,
    TanhGaussianActor,
    sample_tanh_gaussian,
)
from crl.networks.mlp import ResidualMLP

__all__ = ["LOG_STD_MAX", "LOG_STD_MIN", "Networks", "Params", "make_networks",
           "sample_tanh_gaussian"]


@dataclasses.dataclass(frozen=True)
class Networks:
    sa_encoder: ResidualMLP
    goal_encoder: ResidualMLP
    actor: TanhGaussianActor
    state_size: int
    goal_size: int
    action_size: int

    def init(self, key: jax.Array) -> Params:
        """Parameters ``{"actor": ..., "critic": {"sa_encoder": ..., "goal_encoder": ...}}``."""
        actor_key, sa_key, goal_key = jax.random.split(key, 3)
        state = jnp.zeros((1, self.state_size))
        goal = jnp.zeros((1, self.goal_size))
        action = jnp.zeros((1, self.action_size))
        return {
            "actor": self.actor.init(actor_key),
            "critic": {
                "sa_encoder": self.sa_encoder.init(sa_key, self.sa_inputs(state, action)),
                "goal_encoder": self.goal_encoder.init(goal_key, goal),
            },
        }

    @staticmethod
    def sa_inputs(state: jax.Array, action: jax.Array) -> jax.Array:
        """What the state-action encoder reads."""
        return jnp.concatenate([state, action], -1)

    def encode_state_action(self, critic_params: Params, state: jax.Array,
                            action: jax.Array) -> jax.Array:
        return self.sa_encoder.apply(critic_params["sa_encoder"], self.sa_inputs(state, action))

    def encode_goal(self, critic_params: Params, goal: jax.Array) -> jax.Array:
        return self.goal_encoder.apply(critic_params["goal_encoder"], goal)

    def policy(self, actor_params: Params, state: jax.Array,
               goal: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Mean and log-std of the pre-tanh Gaussian."""
        return self.actor.policy(actor_params, state, goal)


def make_networks(*, state_size: int, goal_size: int, action_size: int, repr_dim: int,
                  mlp: Callable[[str, int], ResidualMLP]) -> Networks:
    """The networks, ``mlp(family, out_dim)`` making each ("actor" or "critic")."""
    return Networks(
        sa_encoder=mlp("critic", repr_dim),
        goal_encoder=mlp("critic", repr_dim),
        actor=TanhGaussianActor(mlp("actor", 2 * action_size), state_size, goal_size),
        state_size=state_size,
        goal_size=goal_size,
        action_size=action_size,
    )
