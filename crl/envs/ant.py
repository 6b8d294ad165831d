"""Goal-conditioned Ant tasks on Brax's own ant.xml.

``ant``: reach a target on a circle of radius 10. ``ant_*_maze``: reach a goal cell of a maze.
``ant_ball``: push a ball onto a target. ``ant_push``: push a block out of the corridor to reach
the goal behind it. Brax's ant lets only its feet collide; with walls or objects around, the
torso, hip capsules and feet collide with them too, or the body would slide through.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from crl.envs.base import BraxGoalEnv, point_on_circle, uniform_noise
from crl.envs.maze import MazeArena, cell_centres
from crl.envs.model import (
    PipelineSettings,
    add_goal_marker,
    add_slider,
    add_walls,
    brax_model,
    collide_with_obstacles,
    pushable_geom,
    to_xml,
)

ANT_BODY_GEOMS = ("torso_geom", "aux_1_geom", "aux_2_geom", "aux_3_geom", "aux_4_geom",
                  "left_foot_geom", "right_foot_geom", "third_foot_geom", "fourth_foot_geom")
ANT_SETTINGS = PipelineSettings(n_frames=5, spring_timestep=0.005, spring_n_frames=10,
                                positional_gear=(200.0,), mjx_newton=True)
HEALTHY_Z = (0.2, 1.0)
ANT_Q = 15  # free joint (7) + 8 hinges; then each object's (x, y, z), then the goal marker's
ANT_QD = 14


@dataclasses.dataclass(frozen=True)
class Pushable:
    """An object on slide joints along ``axes`` ("xyz", or "xy" to keep it on the floor; it
    slides, it does not roll), resting on the floor with its centre at ``height``."""

    name: str
    geom: dict[str, str]
    height: float
    axes: str = "xyz"


class Ant(BraxGoalEnv):
    """The goal is the torso (x, y). The state is the Ant's q and qd, then each object's (x, y)
    (and its velocity, with ``observe_object_velocity``; the paper's states have none)."""

    goal_name = "torso (x, y)"
    goal_indices = (0, 1)
    goal_axes = (0, 1)

    def __init__(self, backend: str = "spring", walls=(), wall_half_height: float = 1.0,
                 objects: tuple[Pushable, ...] = (), reset_noise: float = 0.1,
                 target_distance: float = 10.0, observe_object_velocity: bool = False,
                 density: float | None = None):
        root = brax_model("ant")
        if density is not None:  # of every Ant geom without a mass of its own (Brax's: 5)
            root.find("default/geom").set("density", f"{density:g}")
        if walls or objects:
            collide_with_obstacles(root, ANT_BODY_GEOMS)
        add_walls(root, walls, wall_half_height)
        for obj in objects:
            if not obj.axes.startswith("xy"):
                raise ValueError(f"object {obj.name!r} slides along {obj.axes!r}: it needs x, y")
            add_slider(root, obj.name, (0, 0, obj.height), obj.axes, obj.geom)
        add_goal_marker(root, (0, 0, 0.25), "xy", radius=0.25)
        super().__init__(to_xml(root), backend, ANT_SETTINGS)
        self.num_objects = len(objects)
        # Where each object's slide joints start in q (and qd) after the Ant's.
        self._object_q = [sum(len(o.axes) for o in objects[:i]) for i in range(len(objects))]
        self._object_dims = [len(o.axes) for o in objects]
        self.observe_object_velocity = observe_object_velocity
        per_object = 4 if observe_object_velocity else 2
        self.state_size = ANT_Q + ANT_QD + per_object * self.num_objects
        self.reset_noise = reset_noise
        self.target_distance = target_distance

    def sample_start_and_goal(self, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        return jnp.zeros(2), point_on_circle(rng, self.target_distance)

    def object_positions(self, rng: jax.Array, start: jax.Array,
                         goal: jax.Array) -> jax.Array:
        """``[num_objects, 2]`` world (x, y) of the objects at the start of an episode."""
        return jnp.zeros((self.num_objects, 2))

    def initial_q_qd(self, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        task_key, object_key, q_key, qd_key = jax.random.split(rng, 4)
        start, goal = self.sample_start_and_goal(task_key)
        xy = self.object_positions(object_key, start, goal)
        objects = jnp.concatenate([jnp.pad(xy[i], (0, dims - 2))  # any z offset 0
                                   for i, dims in enumerate(self._object_dims)] or [jnp.zeros(0)])
        q = self.sys.init_q.at[:ANT_Q].add(uniform_noise(q_key, (ANT_Q,), self.reset_noise))
        q = q.at[:2].add(start).at[ANT_Q:].set(jnp.concatenate([objects, goal]))
        qd = jnp.zeros(self.sys.qd_size()).at[:ANT_QD].set(
            self.reset_noise * jax.random.normal(qd_key, (ANT_QD,)))
        return q, qd

    def observe_state(self, pipeline_state, action: jax.Array) -> jax.Array:
        q, qd = pipeline_state.q, pipeline_state.qd
        objects_xy = [q[ANT_Q + at:ANT_Q + at + 2] for at in self._object_q]
        objects_vxy = ([qd[ANT_QD + at:ANT_QD + at + 2] for at in self._object_q]
                       if self.observe_object_velocity else [])
        return jnp.concatenate([q[:ANT_Q], qd[:ANT_QD], *objects_xy, *objects_vxy])

    def terminated(self, pipeline_state) -> jax.Array:
        height = pipeline_state.x.pos[0, 2]
        return (height < HEALTHY_Z[0]) | (height > HEALTHY_Z[1])


class AntMaze(MazeArena, Ant):
    """Ant in a maze (scale 4): starts in the ``R`` cell, the goal is a ``G`` cell."""

    default_scale = 4.0


BALL_RADIUS = 0.5


# The paper's ball: two spheres of radius 0.5 at densities 1 and 0.1, 0.576 kg in all.
BALL_MASS = f"{4 / 3 * 3.141592653589793 * BALL_RADIUS**3 * 1.1:.4f}"


class AntBall(Ant):
    """Push a ball (radius 0.5, 0.576 kg, sliding on x and y) onto a target 5 m away; the goal
    is the ball's (x, y). As in the paper's code, the ball starts at a fifth of the way to the
    target plus (cos a, sin b), a uniform and b the target's own angle: its y is always 0.4 of
    the target's, and it starts at most 2.5 m from the Ant, sometimes touching it."""

    goal_name = "ball (x, y)"
    goal_indices = (ANT_Q + ANT_QD, ANT_Q + ANT_QD + 1)

    def __init__(self, backend: str = "spring", target_distance: float = 5.0, **kwargs):
        ball = Pushable("ball", pushable_geom(type="sphere", size=f"{BALL_RADIUS}",
                                              mass=BALL_MASS, rgba="1 1 1 1"),
                        height=BALL_RADIUS, axes="xy")
        super().__init__(backend=backend, objects=(ball,), target_distance=target_distance,
                         **kwargs)

    def object_positions(self, rng: jax.Array, start: jax.Array,
                         goal: jax.Array) -> jax.Array:
        angle = 2 * jnp.pi * jax.random.uniform(rng)
        target_angle = jnp.arctan2(goal[1] - start[1], goal[0] - start[0])
        offset = jnp.stack([jnp.cos(angle), jnp.sin(target_angle)])
        return (start + 0.2 * (goal - start) + offset)[None]


PUSH_LAYOUT = """
#####
#R.##
#..G#
##G##
#####
"""
PUSH_BLOCK_CELL = (2, 2)  # the only way from the start to either goal cell


class AntPush(MazeArena, Ant):
    """A block fills the cell between the Ant and both goal cells (scale 8): the Ant must push
    it aside to get through. The goal is the torso (x, y). As in the paper's code: this layout,
    a 7.2 x 7.2 x 3.6 m block of ``block_mass`` (0.2 g), an Ant of density 40 (Brax's is 5),
    and goals at (16, 8) or (8, 16) from the start plus U[0, ``goal_offset``]^2."""

    default_scale = 8.0

    def __init__(self, backend: str = "spring", scale: float | None = None,
                 block_mass: float = 2e-4, goal_offset: float = 2.0, density: float = 40.0,
                 **kwargs):
        scale = scale or self.default_scale
        half = 0.45 * scale
        height = 0.225 * scale
        block = Pushable("block", pushable_geom(type="box", size=f"{half} {half} {height}",
                                                mass=f"{block_mass:g}", rgba="0.9 0.1 0.1 1"),
                         height=height)
        self._block = jnp.asarray(cell_centres((PUSH_BLOCK_CELL,), scale))
        self.goal_offset = goal_offset
        super().__init__(PUSH_LAYOUT, scale=scale, backend=backend, objects=(block,),
                         density=density, **kwargs)

    def sample_start_and_goal(self, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        cell_key, offset_key = jax.random.split(rng)
        start, goal = super().sample_start_and_goal(cell_key)
        return start, goal + jax.random.uniform(offset_key, (2,), maxval=self.goal_offset)

    def object_positions(self, rng: jax.Array, start: jax.Array,
                         goal: jax.Array) -> jax.Array:
        return self._block
