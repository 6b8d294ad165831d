"""A point in a maze, in pure JAX: fast enough to learn on a CPU in minutes.

The action (clipped to [-1, 1]^2) is a velocity command: the point moves by ``max_step * action``
per step. The point is a square of half-size ``radius``; each axis of a move is applied in turn
and stopped at the face of any wall cell it would enter, so the point can slide along walls but
never enter or cross one (a move is shorter than a cell, so it cannot tunnel either).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from brax.envs.base import State

from crl.envs.base import GoalEnv
from crl.envs.maze import cell_centres, load_layout, sample_goal, uniform_around

# Keeps a stopped point strictly outside the wall cell whose face it touches.
_CONTACT_GAP = 1e-3


class PointMaze(GoalEnv):
    goal_name = "point (x, y)"
    state_size = 2
    goal_indices = (0, 1)

    def __init__(self, layout: str, scale: float = 4.0, max_step: float = 1.0,
                 radius: float = 0.25, start_noise: float = 0.25, goal_noise: float = 0.25):
        maze = load_layout(layout)
        if max_step >= scale - 2 * radius:
            raise ValueError(f"max_step={max_step} would let the point tunnel through a wall")
        self.layout = maze
        self.scale, self.max_step, self.radius = scale, max_step, radius
        # goal_noise is in cells either way, as for the other maze families (MazeArena).
        self.start_noise, self.goal_noise = start_noise, goal_noise * scale
        # Padded by one wall cell on every side: outside the grid is wall.
        self._walls = jnp.asarray(np.pad(maze.walls, 1, constant_values=True))
        self._start = jnp.asarray(cell_centres((maze.start,), scale)[0])
        self._goals = jnp.asarray(cell_centres(maze.goals, scale))

    @property
    def action_size(self) -> int:
        return 2

    @property
    def backend(self) -> str:
        return "jax"

    def sample_start_and_goal(self, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        start_key, goal_key = jax.random.split(rng)
        start = uniform_around(start_key, self._start, self.start_noise)
        return start, sample_goal(goal_key, self._goals, self.goal_noise)

    def reset(self, rng: jax.Array) -> State:
        obs = jnp.concatenate(self.sample_start_and_goal(rng))
        zero = jnp.zeros(())
        return State(pipeline_state=None, obs=obs, reward=zero, done=zero)

    def step(self, state: State, action: jax.Array) -> State:
        delta = self.max_step * jnp.clip(action, -1.0, 1.0)
        position, goal = state.obs[:2], state.obs[2:]
        position = self._move_along(position, delta[0], axis=0)
        position = self._move_along(position, delta[1], axis=1)
        return state.replace(obs=jnp.concatenate([position, goal]), done=jnp.zeros_like(state.done))

    def in_wall(self, position: jax.Array) -> jax.Array:
        """Whether the point's square at ``position`` overlaps a wall cell."""
        corners = position + self.radius * jnp.array([[-1, -1], [-1, 1], [1, -1], [1, 1]])
        cells = jnp.floor(corners / self.scale + 0.5).astype(jnp.int32) + 1  # +1: padding
        cells = jnp.clip(cells, 0, jnp.array(self._walls.shape) - 1)
        return jnp.any(self._walls[cells[:, 0], cells[:, 1]])

    def _move_along(self, position: jax.Array, distance: jax.Array, axis: int) -> jax.Array:
        moved = position.at[axis].add(distance)
        # The leading face entered a wall cell: stop at that cell's near face instead.
        leading_edge = moved[axis] + jnp.sign(distance) * self.radius
        cell = jnp.floor(leading_edge / self.scale + 0.5)
        face = jnp.where(distance > 0, (cell - 0.5) * self.scale - self.radius - _CONTACT_GAP,
                         (cell + 0.5) * self.scale + self.radius + _CONTACT_GAP)
        stopped = jnp.where(distance > 0, jnp.maximum(face, position[axis]),
                            jnp.minimum(face, position[axis]))
        return jnp.where(self.in_wall(moved), position.at[axis].set(stopped), moved)
