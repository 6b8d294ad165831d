"""Goal-conditioned Pusher on Brax's own pusher.xml: push the object onto the goal.

The goal is the object's (x, y, z). Brax's goal body (two slide joints) marks it, moved down to
the object's height so that an object on the goal is at distance 0. ``pusher_easy`` puts the goal
near the object's start region, ``pusher_hard`` anywhere in a 1 m square around the table's
centre. The state is the arm's joint angles, the fingertip and object positions, and the arm's
joint velocities.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from brax.base import Transform

from crl.envs.base import BraxGoalEnv
from crl.envs.model import PipelineSettings, brax_model, to_xml

PUSHER_SETTINGS = PipelineSettings(n_frames=5, spring_timestep=0.001, spring_n_frames=50,
                                   spring_gear=(20.0,))
ARM_JOINTS = 7  # then the object's (y, x) slide joints, then the goal's (y, x)
FINGERTIP = Transform.create(pos=jnp.array([0.1, 0.0, 0.0]))  # between the two tips
# Offsets (x, y) from the bodies' rest positions: the object's start region, and the goal's.
OBJECT_REGION = ((-0.3, 0.0), (-0.2, 0.2))
GOAL_REGIONS = {"easy": ((-0.55, -0.25), (-0.2, 0.2)), "hard": ((-0.65, 0.35), (-0.55, 0.45))}
MIN_OBJECT_GOAL_DISTANCE = 0.17


def _uniform_in(key: jax.Array, region) -> jax.Array:
    (x_low, x_high), (y_low, y_high) = region
    return jax.random.uniform(key, (2,), minval=jnp.array([x_low, y_low]),
                              maxval=jnp.array([x_high, y_high]))


class Pusher(BraxGoalEnv):
    marker_body = "goal"
    goal_name = "object (x, y, z)"
    goal_indices = (10, 11, 12)
    goal_axes = (0, 1, 2)
    state_size = 20

    def __init__(self, kind: str = "easy", backend: str = "spring"):
        if kind not in GOAL_REGIONS:
            raise ValueError(f"kind={kind!r}; valid: {', '.join(GOAL_REGIONS)}")
        root = brax_model("pusher")
        bodies = {body.get("name"): body for body in root.iter("body")}
        object_pos = bodies["object"].get("pos").split()
        goal_pos = bodies["goal"].get("pos").split()
        bodies["goal"].set("pos", " ".join([*goal_pos[:2], object_pos[2]]))
        super().__init__(to_xml(root), backend, PUSHER_SETTINGS)
        self.kind = kind
        self._object = self.sys.link_names.index("object")
        self._wrist = self.sys.link_names.index("r_wrist_roll_link")

    def initial_q_qd(self, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        object_key, goal_key, qd_key = jax.random.split(rng, 3)
        obj = _uniform_in(object_key, OBJECT_REGION)
        goal = _uniform_in(goal_key, GOAL_REGIONS[self.kind])
        # Start the object at least MIN_OBJECT_GOAL_DISTANCE from the goal.
        away = obj - goal
        distance = jnp.linalg.norm(away)
        direction = jnp.where(distance > 1e-6, away / jnp.maximum(distance, 1e-6),
                              jnp.array([1.0, 0.0]))
        obj = goal + direction * jnp.maximum(distance, MIN_OBJECT_GOAL_DISTANCE)
        q = self.sys.init_q.at[ARM_JOINTS:].set(jnp.concatenate([obj[::-1], goal[::-1]]))
        qd = jnp.zeros(self.sys.qd_size()).at[:ARM_JOINTS].set(
            jax.random.uniform(qd_key, (ARM_JOINTS,), minval=-0.005, maxval=0.005))
        return q, qd

    def observe_state(self, pipeline_state, action: jax.Array) -> jax.Array:
        q, qd, x = pipeline_state.q, pipeline_state.qd, pipeline_state.x
        tip = x.take(self._wrist).do(FINGERTIP).pos
        return jnp.concatenate([q[:ARM_JOINTS], tip, x.pos[self._object], qd[:ARM_JOINTS]])
