"""What makes an environment goal-conditioned in crl.

Every env is a Brax ``Env`` whose observation is ``[state, goal]``: ``state_size`` state entries,
then the goal, which lives in the space of ``state[goal_indices]``. Success and distance are read
off the observation, so the trainer needs nothing else from an env.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from brax.envs.base import Env


class GoalEnv(Env):
    state_size: int
    goal_indices: tuple[int, ...]

    @property
    def goal_size(self) -> int:
        return len(self.goal_indices)

    @property
    def observation_size(self) -> int:
        return self.state_size + self.goal_size


def split_observation(obs: jax.Array, state_size: int) -> tuple[jax.Array, jax.Array]:
    return obs[..., :state_size], obs[..., state_size:]


def goal_distance(obs: jax.Array, state_size: int, goal_indices: tuple[int, ...]) -> jax.Array:
    """Distance between the achieved goal ``state[goal_indices]`` and the commanded goal."""
    state, goal = split_observation(obs, state_size)
    achieved = state[..., jnp.asarray(goal_indices)]
    return jnp.linalg.norm(achieved - goal, axis=-1)
