"""Batched episodes for training and evaluation.

Brax's own AutoResetWrapper restores each env's *first* state, so an env would chase the same
goal from the same start forever; here a finished env is reset with fresh randomness. Every step
also carries the id of its trajectory (a per-env episode counter), which relabelling uses to keep
goals within one trajectory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from brax.envs.base import State, Wrapper

from crl.envs.base import GoalEnv

_OWN_INFO = ("steps", "traj_id", "rng", "terminated")


class EpisodeBatch(Wrapper):
    """``num_envs`` copies of ``env`` stepping in lockstep; episodes end on termination or after
    ``episode_length`` steps and restart from a fresh reset."""

    def __init__(self, env: GoalEnv, episode_length: int):
        super().__init__(env)
        self.episode_length = episode_length

    def reset(self, rng: jax.Array) -> State:
        """``rng``: one key per env, ``[num_envs, 2]``."""
        reset_keys, carried_keys = jnp.moveaxis(jax.vmap(jax.random.split)(rng), 1, 0)
        state = jax.vmap(self.env.reset)(reset_keys)
        num_envs = rng.shape[0]
        state.info.update(
            steps=jnp.zeros(num_envs, jnp.int32),
            traj_id=jnp.zeros(num_envs, jnp.int32),
            rng=carried_keys,
            terminated=jnp.zeros(num_envs, bool),
        )
        return state

    def step(self, state: State, action: jax.Array) -> State:
        info = state.info
        env_info = {k: v for k, v in info.items() if k not in _OWN_INFO}
        # The env sees its own info and a cleared done flag (ours marks an episode start).
        inner = state.replace(info=env_info, done=jnp.zeros_like(state.done))
        stepped = jax.vmap(self.env.step)(inner, action)
        steps = info["steps"] + 1
        terminated = stepped.done > 0
        done = terminated | (steps >= self.episode_length)

        next_keys, reset_keys = jnp.moveaxis(jax.vmap(jax.random.split)(info["rng"]), 1, 0)
        fresh = jax.vmap(self.env.reset)(reset_keys)

        def where_done(reset_leaf: jax.Array, stepped_leaf: jax.Array) -> jax.Array:
            mask = done.reshape(done.shape + (1,) * (stepped_leaf.ndim - 1))
            return jnp.where(mask, reset_leaf, stepped_leaf)

        return stepped.replace(
            pipeline_state=jax.tree.map(where_done, fresh.pipeline_state,
                                        stepped.pipeline_state),
            obs=where_done(fresh.obs, stepped.obs),
            done=done.astype(jnp.float32),
            info={
                **jax.tree.map(where_done, fresh.info, stepped.info),
                "steps": jnp.where(done, 0, steps),
                "traj_id": info["traj_id"] + done.astype(jnp.int32),
                "rng": next_keys,
                # What happened in this step (evaluation stops counting after it); ``done`` says
                # the returned state starts a new episode.
                "terminated": terminated,
            },
        )
