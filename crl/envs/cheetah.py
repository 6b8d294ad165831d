"""Goal-conditioned Half Cheetah on Brax's own half_cheetah.xml: bring the torso to x = 5.

The state is q and qd with the torso's x kept (the goal is a position); the goal is the torso x.
The Cheetah cannot fall over in a way that ends an episode, so episodes only time out.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import jax
import jax.numpy as jnp
import mujoco

from crl.envs.base import BraxGoalEnv, uniform_noise
from crl.envs.model import PipelineSettings, add_goal_marker, brax_model, to_xml

CHEETAH_SETTINGS = PipelineSettings(n_frames=5, spring_timestep=0.003125, spring_n_frames=16,
                                    spring_gear=(120.0, 90.0, 60.0, 120.0, 100.0, 100.0))
CHEETAH_Q = 9  # rootx, rootz, rooty, 6 hinges; the goal marker's x follows


def _fix_total_mass(root: ET.Element) -> None:
    """Brax's model scales every body to a total mass (``settotalmass``), which would scale the
    goal marker too and lighten the Cheetah. Scale the geoms' density instead, before adding the
    marker (whose mass is explicit): the Cheetah keeps its masses, and the marker is left out."""
    compiler = root.find("compiler")
    total = float(compiler.attrib.pop("settotalmass"))
    unscaled = mujoco.MjModel.from_xml_string(to_xml(root)).body_mass.sum()
    root.find("default/geom").set("density", f"{1000.0 * total / unscaled:g}")  # MuJoCo: 1000


class Cheetah(BraxGoalEnv):
    goal_name = "torso x"
    goal_indices = (0,)
    goal_axes = (0,)
    state_size = 2 * CHEETAH_Q

    def __init__(self, backend: str = "generalized", target_x: float = 5.0,
                 reset_noise: float = 0.1):
        root = brax_model("half_cheetah")
        _fix_total_mass(root)
        add_goal_marker(root, (0, 0, 0.25), "x", radius=0.25)
        super().__init__(to_xml(root), backend, CHEETAH_SETTINGS)
        self.target_x, self.reset_noise = target_x, reset_noise

    def initial_q_qd(self, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        q_key, qd_key = jax.random.split(rng)
        q = self.sys.init_q.at[:CHEETAH_Q].add(
            uniform_noise(q_key, (CHEETAH_Q,), self.reset_noise))
        q = q.at[CHEETAH_Q].set(self.target_x)
        qd = jnp.zeros(self.sys.qd_size()).at[:CHEETAH_Q].set(
            self.reset_noise * jax.random.normal(qd_key, (CHEETAH_Q,)))
        return q, qd

    def observe_state(self, pipeline_state, action: jax.Array) -> jax.Array:
        return jnp.concatenate([pipeline_state.q[:CHEETAH_Q], pipeline_state.qd[:CHEETAH_Q]])
