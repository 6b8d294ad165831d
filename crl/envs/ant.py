"""Goal-conditioned Ant: reach a target on a circle (``ant``) or a goal cell of a maze.

The model is Brax's own ant.xml, edited at run time: a goal marker body (two slide joints that
nothing drives, so physics never moves it) and, for mazes, wall boxes. Brax's ant lets only its
feet collide; in a maze the torso, hip capsules and feet must collide with the walls or the body
slides through them. A dedicated contact bit keeps those new contacts to ant-wall pairs only
(no foot-foot or wall-floor pairs).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import jax
import jax.numpy as jnp
import mujoco
from brax.envs.base import PipelineEnv, State
from brax.io import mjcf
from etils import epath

from crl.envs.base import GoalEnv
from crl.envs.maze import cell_centres, load_layout, sample_goal

WALL_CONTACT_BIT = 2
ANT_WALL_GEOMS = ("torso_geom", "aux_1_geom", "aux_2_geom", "aux_3_geom", "aux_4_geom",
                  "left_foot_geom", "right_foot_geom", "third_foot_geom", "fourth_foot_geom")
HEALTHY_Z = (0.2, 1.0)
ANT_Q = 15  # free joint (7) + 8 hinges; the goal marker's two slide joints follow
ANT_QD = 14


def ant_xml(wall_boxes: list[tuple[float, float, float, float]] = (),
            wall_height: float = 1.0) -> str:
    """Brax's ant.xml plus a goal marker and walls ``(x, y, half_x, half_y)`` of height
    ``2 * wall_height``."""
    root = ET.parse(epath.resource_path("brax") / "envs/assets/ant.xml").getroot()
    init_qpos = root.find("./custom/numeric[@name='init_qpos']")
    init_qpos.set("data", init_qpos.get("data") + " 0 0")
    worldbody = root.find("worldbody")
    target = ET.SubElement(worldbody, "body", name="target", pos="0 0 0.25")
    for axis_name, axis in (("x", "1 0 0"), ("y", "0 1 0")):
        ET.SubElement(target, "joint", name=f"target_{axis_name}", type="slide", axis=axis,
                      limited="false", armature="1", damping="0")
    ET.SubElement(target, "geom", name="target_geom", type="sphere", size="0.25",
                  contype="0", conaffinity="0", rgba="1 0 0 1", mass="1")
    if wall_boxes:
        for geom in root.iter("geom"):
            if geom.get("name") in ANT_WALL_GEOMS:
                geom.set("conaffinity", str(WALL_CONTACT_BIT))
        for index, (x, y, half_x, half_y) in enumerate(wall_boxes):
            ET.SubElement(worldbody, "geom", name=f"wall_{index}", type="box",
                          pos=f"{x} {y} {wall_height}",
                          size=f"{half_x} {half_y} {wall_height}",
                          contype=str(WALL_CONTACT_BIT), conaffinity="0",
                          rgba="0.7 0.5 0.3 1")
    return ET.tostring(root, encoding="unicode")


def configure_pipeline(sys, backend: str) -> tuple[object, int]:
    """Brax's own per-pipeline settings for the Ant: (system, physics steps per env step)."""
    if backend in ("spring", "positional"):
        sys = sys.tree_replace({"opt.timestep": 0.005})
        n_frames = 10
    else:
        n_frames = 5
    if backend == "mjx":
        sys = sys.tree_replace({
            "opt.solver": mujoco.mjtSolver.mjSOL_NEWTON,
            "opt.disableflags": mujoco.mjtDisableBit.mjDSBL_EULERDAMP,
            "opt.iterations": 1,
            "opt.ls_iterations": 4,
        })
    if backend == "positional":
        sys = sys.replace(actuator=sys.actuator.replace(gear=200 * jnp.ones_like(
            sys.actuator.gear)))
    return sys, n_frames


class Ant(GoalEnv, PipelineEnv):
    """Ant whose goal is its torso (x, y); ``ant``: the target is on a circle of radius 10."""

    state_size = ANT_Q + ANT_QD
    goal_indices = (0, 1)

    def __init__(self, backend: str = "spring", wall_boxes=(), wall_height: float = 1.0,
                 reset_noise: float = 0.1, target_distance: float = 10.0):
        sys = mjcf.loads(ant_xml(list(wall_boxes), wall_height))
        sys, n_frames = configure_pipeline(sys, backend)
        super().__init__(sys=sys, backend=backend, n_frames=n_frames)
        self.reset_noise = reset_noise
        self.target_distance = target_distance

    def sample_start_and_goal(self, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        angle = jax.random.uniform(rng, (), maxval=2 * jnp.pi)
        goal = self.target_distance * jnp.array([jnp.cos(angle), jnp.sin(angle)])
        return jnp.zeros(2), goal

    def reset(self, rng: jax.Array) -> State:
        task_key, q_key, qd_key = jax.random.split(rng, 3)
        start, goal = self.sample_start_and_goal(task_key)
        noise = self.reset_noise
        q = self.sys.init_q.at[:ANT_Q].add(
            jax.random.uniform(q_key, (ANT_Q,), minval=-noise, maxval=noise))
        q = q.at[:2].add(start).at[ANT_Q:].set(goal)
        qd = jnp.zeros(self.sys.qd_size()).at[:ANT_QD].set(
            noise * jax.random.normal(qd_key, (ANT_QD,)))
        pipeline_state = self.pipeline_init(q, qd)
        zero = jnp.zeros(())
        return State(pipeline_state, self._observe(pipeline_state), zero, zero)

    def step(self, state: State, action: jax.Array) -> State:
        pipeline_state = self.pipeline_step(state.pipeline_state, action)
        obs = self._observe(pipeline_state)
        height = pipeline_state.x.pos[0, 2]
        unhealthy = (height < HEALTHY_Z[0]) | (height > HEALTHY_Z[1])
        distance = jnp.linalg.norm(obs[:2] - obs[-2:])
        return state.replace(pipeline_state=pipeline_state, obs=obs, reward=-distance,
                             done=unhealthy.astype(jnp.float32))

    def _observe(self, pipeline_state) -> jax.Array:
        q, qd = pipeline_state.q, pipeline_state.qd
        return jnp.concatenate([q[:ANT_Q], qd[:ANT_QD], q[ANT_Q:]])


class AntMaze(Ant):
    """Ant in a maze: starts in the ``R`` cell, the goal is a ``G`` cell (plus noise)."""

    def __init__(self, layout: str, backend: str = "spring", scale: float = 4.0,
                 goal_noise: float = 0.5, **kwargs):
        maze = load_layout(layout)
        super().__init__(backend=backend, wall_boxes=maze.wall_boxes(scale),
                         wall_height=0.25 * scale, **kwargs)
        self.layout, self.scale, self.goal_noise = maze, scale, goal_noise
        self._start = jnp.asarray(cell_centres((maze.start,), scale)[0])
        self._goals = jnp.asarray(cell_centres(maze.goals, scale))

    def sample_start_and_goal(self, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self._start, sample_goal(rng, self._goals, self.goal_noise)
