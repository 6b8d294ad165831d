"""Goal-conditioned Reacher on Brax's own reacher.xml: bring the fingertip to a target.

The target is uniform over a disc of radius 0.2 around the arm's base, at the fingertip's
height, and Brax's own target body (two slide joints) marks it. The goal is the fingertip's
(x, y, z); the state is the joint angles (cos, sin), the fingertip's position and velocity.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from brax.base import Transform

from crl.envs.base import BraxGoalEnv, point_on_circle, uniform_noise
from crl.envs.model import PipelineSettings, brax_model, to_xml

REACHER_SETTINGS = PipelineSettings(n_frames=2, spring_timestep=0.005, spring_n_frames=4,
                                    spring_gear=(25.0, 25.0))
FINGERTIP = Transform.create(pos=jnp.array([0.11, 0.0, 0.0]))  # in the second link's frame
TARGET_RADIUS = 0.2


class Reacher(BraxGoalEnv):
    marker_body = "target"
    goal_name = "fingertip (x, y, z)"
    goal_indices = (4, 5, 6)
    goal_axes = (0, 1, 2)
    state_size = 10

    def __init__(self, backend: str = "spring", uniform_over_disc: bool = False):
        super().__init__(to_xml(brax_model("reacher")), backend, REACHER_SETTINGS)
        # The paper's code draws the target's radius uniformly, which favours near targets (a
        # density over the disc falling as 1/r); uniform_over_disc spreads them evenly instead.
        self.uniform_over_disc = uniform_over_disc

    def initial_q_qd(self, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        q_key, qd_key, radius_key, angle_key = jax.random.split(rng, 4)
        fraction = jax.random.uniform(radius_key)
        radius = TARGET_RADIUS * (jnp.sqrt(fraction) if self.uniform_over_disc else fraction)
        q = self.sys.init_q.at[:2].add(uniform_noise(q_key, (2,), 0.1))
        q = q.at[2:].set(point_on_circle(angle_key, radius))
        qd = jnp.zeros(self.sys.qd_size()).at[:2].set(uniform_noise(qd_key, (2,), 0.005))
        return q, qd

    def observe_state(self, pipeline_state, action: jax.Array) -> jax.Array:
        angles = pipeline_state.q[:2]
        tip = pipeline_state.x.take(1).do(FINGERTIP).pos
        tip_velocity = FINGERTIP.do(pipeline_state.xd.take(1)).vel
        return jnp.concatenate([jnp.cos(angles), jnp.sin(angles), tip, tip_velocity])
