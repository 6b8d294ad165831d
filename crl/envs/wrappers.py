"""Batched episodes for training and evaluation.

An env whose episode ends restarts in one of two ways (``reset``): ``first_state`` restores the
state its first episode started from, as Brax's AutoResetWrapper does in the paper's code, so
each env chases one goal from one start for the whole run; ``resample`` resets it with fresh
randomness. Every step also carries the id of its trajectory (a per-env episode counter), which
relabelling uses to keep goals within one trajectory.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from brax.envs.base import State, Wrapper
from jax.sharding import PartitionSpec

from crl.envs import RESET_MODES
from crl.envs.base import GoalEnv

_OWN_INFO = ("steps", "traj_id", "rng", "terminated", "first")


def per_device(fn: Callable) -> Callable:
    """``fn`` (physics on this device's envs) freed of ``shard_map``'s varying-axis types.

    Under ``shard_map`` JAX types every value as device-varying or not and rejects a loop
    carry or ``cond`` whose branches disagree. Brax's generalized pipeline and MJX's solver
    build such carries from literals, so they fail to trace once the env state is
    device-varying. Env physics never communicates across devices, so it runs in a nested
    ``shard_map`` that checks no types (its inputs are first stripped of theirs), and its
    outputs are typed device-varying again. Outside ``shard_map`` this is ``fn`` itself.
    """
    def wrapped(*args):
        manual_axes = tuple(jax.sharding.get_abstract_mesh().manual_axes)
        if not manual_axes:
            return fn(*args)

        def untyped(*args):
            return fn(*jax.tree.map(lambda x: x + jnp.zeros((), x.dtype), args))

        out = jax.shard_map(untyped, in_specs=PartitionSpec(), out_specs=PartitionSpec(),
                            axis_names=set(), check_vma=False)(*args)
        return jax.tree.map(lambda x: jax.lax.pcast(x, manual_axes, to="varying"), out)
    return wrapped


class EpisodeBatch(Wrapper):
    """``num_envs`` copies of ``env`` stepping in lockstep; episodes end on termination or after
    ``episode_length`` steps and restart from the first episode's state (``first_state``, kept
    in ``info["first"]``) or from a fresh reset (``resample``)."""

    def __init__(self, env: GoalEnv, episode_length: int, reset: str = "resample"):
        super().__init__(env)
        if reset not in RESET_MODES:
            raise ValueError(f"reset={reset!r} is unknown; valid: {', '.join(RESET_MODES)}")
        self.episode_length = episode_length
        self.reset_mode = reset
        self._reset = per_device(jax.vmap(env.reset))
        self._step = per_device(jax.vmap(env.step))

    def reset(self, rng: jax.Array) -> State:
        """``rng``: one key per env, ``[num_envs, 2]``."""
        reset_keys, carried_keys = jnp.moveaxis(jax.vmap(jax.random.split)(rng), 1, 0)
        state = self._reset(reset_keys)
        num_envs = rng.shape[0]
        if self.reset_mode == "first_state":
            state.info["first"] = {"pipeline_state": state.pipeline_state, "obs": state.obs,
                                   "info": dict(state.info)}
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
        stepped = self._step(inner, action)
        steps = info["steps"] + 1
        terminated = stepped.done > 0
        done = terminated | (steps >= self.episode_length)

        next_keys, reset_keys = jnp.moveaxis(jax.vmap(jax.random.split)(info["rng"]), 1, 0)

        def where_done(reset_leaf: jax.Array, stepped_leaf: jax.Array) -> jax.Array:
            mask = done.reshape(done.shape + (1,) * (stepped_leaf.ndim - 1))
            return jnp.where(mask, reset_leaf, stepped_leaf)

        def restart_done_envs(fresh: dict):
            return (jax.tree.map(where_done, fresh["pipeline_state"], stepped.pipeline_state),
                    where_done(fresh["obs"], stepped.obs),
                    jax.tree.map(where_done, fresh["info"], stepped.info))

        if self.reset_mode == "first_state":
            pipeline_state, obs, env_info = restart_done_envs(info["first"])
            env_info = {**env_info, "first": info["first"]}
        else:
            def reset_done_envs():
                fresh = self._reset(reset_keys)
                return restart_done_envs({"pipeline_state": fresh.pipeline_state,
                                          "obs": fresh.obs, "info": fresh.info})

            # An episode ends on one step in hundreds: skip the batched reset (a quarter of a
            # step's cost for the generalized pipeline) on the steps where no env needs it.
            pipeline_state, obs, env_info = jax.lax.cond(
                jnp.any(done), reset_done_envs,
                lambda: (stepped.pipeline_state, stepped.obs, stepped.info))
        return stepped.replace(
            pipeline_state=pipeline_state,
            obs=obs,
            done=done.astype(jnp.float32),
            info={
                **env_info,
                "steps": jnp.where(done, 0, steps),
                "traj_id": info["traj_id"] + done.astype(jnp.int32),
                "rng": next_keys,
                # What happened in this step (evaluation stops counting after it); ``done`` says
                # the returned state starts a new episode.
                "terminated": terminated,
            },
        )
