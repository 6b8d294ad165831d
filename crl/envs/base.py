"""What makes an environment goal-conditioned in crl.

Every env is a Brax ``Env`` whose observation is ``[state, goal]``: ``state_size`` state entries,
then the goal, which lives in the space of ``state[goal_indices]``. Success and distance are read
off the observation, so the trainer needs nothing else from an env.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from brax.envs.base import Env, PipelineEnv, State
from brax.io import mjcf

from crl.envs.model import PipelineSettings


class GoalEnv(Env):
    state_size: int
    goal_indices: tuple[int, ...]
    goal_name: str  # what the goal is, e.g. "torso (x, y)"

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


class BraxGoalEnv(GoalEnv, PipelineEnv):
    """A goal-conditioned task on a Brax model.

    A subclass builds the model (with a goal marker body on slide joints, ``marker_body``, a
    child of the world body), says how an episode starts (``initial_q_qd``), what the state is
    (``observe_state``) and when an episode terminates (``terminated``; never by default). The
    commanded goal is the marker's position (coordinates ``goal_axes``), so the goal in the
    observation is where the marker is drawn. Actions in [-1, 1] become the actuators' controls
    through ``control``: each across its actuator's control range, unless a subclass says
    otherwise.
    """

    marker_body: str = "goal_marker"
    goal_axes: tuple[int, ...]

    def __init__(self, xml: str, backend: str, settings: PipelineSettings):
        sys, n_frames = settings.configure(mjcf.loads(xml), backend)
        PipelineEnv.__init__(self, sys=sys, backend=backend, n_frames=n_frames)
        self._marker = sys.link_names.index(self.marker_body)
        # The goal is the marker's rest position plus its slide joints' offsets, read from q:
        # exact on every pipeline (spring joints are stiff springs, so the body itself sags).
        model = sys.mj_model
        body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, self.marker_body)
        joints = np.flatnonzero(model.jnt_bodyid == body)
        self._marker_origin = np.asarray(model.body_pos[body], np.float32)
        self._marker_q = np.asarray(model.jnt_qposadr[joints])
        self._marker_axes = np.asarray(model.jnt_axis[joints], np.float32)
        ctrl_range = np.asarray(sys.actuator.ctrl_range, np.float32)
        self._ctrl_low, self._ctrl_high = ctrl_range[:, 0], ctrl_range[:, 1]

    def initial_q_qd(self, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError

    def observe_state(self, pipeline_state, action: jax.Array) -> jax.Array:
        raise NotImplementedError

    def terminated(self, pipeline_state) -> jax.Array:
        return jnp.zeros((), bool)

    def commanded_goal(self, pipeline_state) -> jax.Array:
        offsets = pipeline_state.q[self._marker_q] @ self._marker_axes
        return (self._marker_origin + offsets)[jnp.asarray(self.goal_axes)]

    def observe(self, pipeline_state, action: jax.Array) -> jax.Array:
        return jnp.concatenate([self.observe_state(pipeline_state, action),
                                self.commanded_goal(pipeline_state)])

    def reset(self, rng: jax.Array) -> State:
        pipeline_state = self.pipeline_init(*self.initial_q_qd(rng))
        obs = self.observe(pipeline_state, jnp.zeros(self.action_size))
        zero = jnp.zeros(())
        return State(pipeline_state, obs, zero, zero)

    def control(self, action: jax.Array) -> jax.Array:
        """The actuators' controls for an action in [-1, 1]: each across its control range."""
        return self._ctrl_low + 0.5 * (action + 1) * (self._ctrl_high - self._ctrl_low)

    def step(self, state: State, action: jax.Array) -> State:
        control = self.control(action)
        pipeline_state = self.pipeline_step(state.pipeline_state, control)
        obs = self.observe(pipeline_state, control)
        distance = goal_distance(obs, self.state_size, self.goal_indices)
        return state.replace(pipeline_state=pipeline_state, obs=obs, reward=-distance,
                             done=self.terminated(pipeline_state).astype(jnp.float32))


def uniform_noise(key: jax.Array, shape: tuple[int, ...], scale: float) -> jax.Array:
    return jax.random.uniform(key, shape, minval=-scale, maxval=scale)


def point_on_circle(key: jax.Array, radius: jax.Array | float) -> jax.Array:
    angle = jax.random.uniform(key, (), maxval=2 * jnp.pi)
    return radius * jnp.array([jnp.cos(angle), jnp.sin(angle)])
