"""Goal-conditioned Humanoid on Brax's own humanoid.xml: walk to a target 1-5 m away
(``humanoid``) or to a goal cell of a maze (``humanoid_*_maze``, scale 2).

The goal is the torso (x, y, z); the commanded height is fixed at 1.25, about the torso's
height when standing. The state is Brax's Humanoid observation (q, qd, each body's inertia and
velocity about the centre of mass, actuator forces) with absolute positions kept, because the
goal is a position. As in the paper's code, it is taken over the whole system, the 1 kg goal
marker on its two slide joints included (268 numbers: the marker's x, y are in q, and its mass
moves the centre of mass); ``observe_marker=False`` keeps the Humanoid's own 246. Episodes
start without noise, as in the paper's code. In a maze every body geom collides with the walls.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from brax import actuator
from brax.base import Transform

from crl.envs.base import BraxGoalEnv, point_on_circle, uniform_noise
from crl.envs.maze import MazeArena
from crl.envs.model import (
    PipelineSettings,
    add_goal_marker,
    add_walls,
    brax_model,
    collide_with_obstacles,
    to_xml,
)

HUMANOID_BODY_GEOMS = ("torso1", "head", "uwaist", "lwaist", "butt", "right_thigh1",
                       "right_shin1", "right_foot", "left_thigh1", "left_shin1", "left_foot",
                       "right_uarm1", "right_larm", "right_hand", "left_uarm1", "left_larm",
                       "left_hand")
HUMANOID_SETTINGS = PipelineSettings(n_frames=5, spring_timestep=0.0015, spring_n_frames=10,
                                     spring_gear=(350.0,) * 11 + (100.0,) * 6, mjx_newton=True)
HEALTHY_Z = (1.0, 2.0)  # Brax's Humanoid
TARGET_HEIGHT = 1.25


class Humanoid(BraxGoalEnv):
    goal_name = "torso (x, y, z)"
    goal_indices = (0, 1, 2)
    goal_axes = (0, 1, 2)

    def __init__(self, backend: str = "spring", walls=(), wall_half_height: float = 0.5,
                 reset_noise: float = 0.0, target_distance: tuple[float, float] = (1.0, 5.0),
                 observe_marker: bool = True):
        root = brax_model("humanoid")
        if walls:
            collide_with_obstacles(root, HUMANOID_BODY_GEOMS)
        add_walls(root, walls, wall_half_height)
        add_goal_marker(root, (0, 0, TARGET_HEIGHT), "xy", radius=0.25)
        super().__init__(to_xml(root), backend, HUMANOID_SETTINGS)
        # Everything before the goal marker (the last body, on the last two joints) is the
        # Humanoid.
        self._robot_q, self._robot_qd = self.sys.q_size() - 2, self.sys.qd_size() - 2
        self._links = self.sys.num_links() if observe_marker else self._marker
        self._q = self.sys.q_size() if observe_marker else self._robot_q
        self._qd = self.sys.qd_size() if observe_marker else self._robot_qd
        self.state_size = self._q + 2 * self._qd + 16 * self._links
        self.reset_noise = reset_noise
        self.target_distance = target_distance

    def sample_start_and_goal(self, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        # Uniform in distance, not in area: near targets are as frequent as far ones.
        distance_key, angle_key = jax.random.split(rng)
        distance = jax.random.uniform(distance_key, (), minval=self.target_distance[0],
                                      maxval=self.target_distance[1])
        return jnp.zeros(2), point_on_circle(angle_key, distance)

    def initial_q_qd(self, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        task_key, q_key, qd_key = jax.random.split(rng, 3)
        start, goal = self.sample_start_and_goal(task_key)
        robot_q, robot_qd = self._robot_q, self._robot_qd
        q = self.sys.init_q.at[:robot_q].add(uniform_noise(q_key, (robot_q,), self.reset_noise))
        q = q.at[:2].add(start).at[robot_q:].set(goal)
        qd = jnp.zeros(self.sys.qd_size()).at[:robot_qd].set(
            uniform_noise(qd_key, (robot_qd,), self.reset_noise))
        return q, qd

    def observe_state(self, pipeline_state, action: jax.Array) -> jax.Array:
        q, qd = pipeline_state.q, pipeline_state.qd
        tau = actuator.to_tau(self.sys, action, q, qd)
        return jnp.concatenate([q[:self._q], qd[:self._qd], self._body_features(pipeline_state),
                                tau[:self._qd]])

    def _body_features(self, pipeline_state) -> jax.Array:
        """Each body's inertia about the centre of mass (9 + mass) and its velocity (6)."""
        links = jnp.arange(self._links)
        inertia = jax.tree.map(lambda x: x[links], self.sys.link.inertia)
        if self.backend in ("spring", "positional"):
            # The inertia these pipelines simulate with (Brax's Humanoid does the same).
            inertia = inertia.replace(
                i=jax.vmap(jnp.diag)(jax.vmap(jnp.diagonal)(inertia.i)
                                     ** (1 - self.sys.spring_inertia_scale)),
                mass=inertia.mass ** (1 - self.sys.spring_mass_scale))
        x = pipeline_state.x.take(links)
        x_i = x.vmap().do(inertia.transform)
        total_mass = jnp.sum(inertia.mass)
        com = jnp.sum(inertia.mass[:, None] * x_i.pos, axis=0) / total_mass
        about_com = x_i.replace(pos=x_i.pos - com).vmap().do(inertia)
        xd_i = Transform.create(pos=x_i.pos - x.pos).vmap().do(pipeline_state.xd.take(links))
        return jnp.concatenate([
            about_com.i.reshape(self._links, 9).ravel(), inertia.mass,
            (inertia.mass[:, None] * xd_i.vel / total_mass).ravel(), xd_i.ang.ravel()])

    def terminated(self, pipeline_state) -> jax.Array:
        height = pipeline_state.x.pos[0, 2]
        return (height < HEALTHY_Z[0]) | (height > HEALTHY_Z[1])


class HumanoidMaze(MazeArena, Humanoid):
    """Humanoid in a maze (scale 2): starts in the ``R`` cell, the goal is a ``G`` cell."""

    default_scale = 2.0
