"""Trajectory replay over (time, env) and hindsight relabelling.

The buffer is a ring over time for every env at once: ``data`` leaves are ``[capacity, num_envs,
...]``. Sampling reads, for every env, one window of consecutive time steps; relabelling then
gives step t of a window the goal of a later step j of the same trajectory, with
P(j) proportional to discount^(j - t) (a truncated geometric over the steps left in the window),
or step t itself when no later step of its trajectory is in the window.

Relabelling costs O(L) per window of length L: the number of later steps of the same trajectory
comes from one reverse cumulative minimum, and the offset is drawn by inverting the truncated
geometric CDF, never by building an L x L probability matrix.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

Pytree = Any


@struct.dataclass
class ReplayBuffer:
    data: Pytree  # leaves [capacity, num_envs, ...]
    insert_position: jax.Array  # int32 scalar: next time row to write
    size: jax.Array  # int32 scalar: number of valid time rows

    @property
    def capacity(self) -> int:
        return jax.tree.leaves(self.data)[0].shape[0]


def init_buffer(example_step: Pytree, capacity: int) -> ReplayBuffer:
    """An empty buffer shaped after one time row ``example_step`` (leaves ``[num_envs, ...]``)."""
    data = jax.tree.map(lambda x: jnp.zeros((capacity, *x.shape), x.dtype), example_step)
    return ReplayBuffer(data=data, insert_position=jnp.int32(0), size=jnp.int32(0))


def insert(buffer: ReplayBuffer, steps: Pytree) -> ReplayBuffer:
    """Append ``steps`` (leaves ``[T, num_envs, ...]``, T <= capacity), overwriting the oldest."""
    length = jax.tree.leaves(steps)[0].shape[0]
    capacity = buffer.capacity
    if length > capacity:
        raise ValueError(f"cannot insert {length} steps into a buffer of capacity {capacity}")
    rows = (buffer.insert_position + jnp.arange(length)) % capacity
    data = jax.tree.map(lambda d, s: d.at[rows].set(s), buffer.data, steps)
    return buffer.replace(
        data=data,
        insert_position=(buffer.insert_position + length) % capacity,
        size=jnp.minimum(buffer.size + length, capacity),
    )


def sample_windows(buffer: ReplayBuffer, key: jax.Array, length: int) -> Pytree:
    """One window of ``length`` consecutive steps per env: leaves ``[num_envs, length, ...]``.

    Each env's window starts uniformly among the positions where it fits in the stored history
    (the caller guarantees ``size >= length``).
    """
    capacity = buffer.capacity
    num_envs = jax.tree.leaves(buffer.data)[0].shape[1]
    oldest = (buffer.insert_position - buffer.size) % capacity
    starts = jax.random.randint(key, (num_envs,), 0, buffer.size - length + 1)
    rows = (oldest + starts[:, None] + jnp.arange(length)[None, :]) % capacity
    envs = jnp.arange(num_envs)[:, None]
    return jax.tree.map(lambda d: d[rows, envs], buffer.data)


def sample_future_steps(key: jax.Array, traj_id: jax.Array, discount: float) -> jax.Array:
    """For every step t of a window with trajectory ids ``traj_id`` (``[L]``), the step j whose
    state becomes t's goal: j = t + k with P(k) proportional to discount^(k-1), k = 1..n_t, where
    n_t is the number of later steps of t's trajectory in the window; j = t when n_t = 0."""
    length = traj_id.shape[0]
    t = jnp.arange(length)
    # Trajectories are contiguous in time, so t's trajectory ends at the first index >= t whose
    # successor has another id (or at the end of the window).
    ends_here = jnp.append(traj_id[1:] != traj_id[:-1], True)
    trajectory_end = jax.lax.cummin(jnp.where(ends_here, t, length - 1), reverse=True)
    n = trajectory_end - t
    # Inverse CDF: P(k' <= k) = (1 - g^k) / (1 - g^n), so k = ceil(log(1 - u (1 - g^n)) / log g).
    log_discount = jnp.log(jnp.float32(discount))
    mass = -jnp.expm1(n * log_discount)  # 1 - g^n, accurate for small n
    u = jax.random.uniform(key, (length,))
    k = jnp.ceil(jnp.log1p(-u * mass) / log_discount).astype(jnp.int32)
    k = jnp.clip(k, 1, jnp.maximum(n, 1))
    return jnp.where(n > 0, t + k, t)


def relabel(key: jax.Array, windows: Pytree, goal_indices: tuple[int, ...],
            discount: float) -> dict[str, jax.Array]:
    """Hindsight goals for windows with leaves ``[E, L, ...]`` holding ``state``, ``action`` and
    ``traj_id``. Returns ``state``, ``action``, ``goal`` of the first L-1 steps of every window,
    flattened to ``[E * (L - 1), ...]``."""
    num_envs, length = windows["traj_id"].shape
    keys = jax.random.split(key, num_envs)
    future = jax.vmap(sample_future_steps, in_axes=(0, 0, None))(keys, windows["traj_id"],
                                                                 discount)
    achieved = windows["state"][..., jnp.asarray(goal_indices)]
    goal = jnp.take_along_axis(achieved, future[..., None], axis=1)

    def first_steps(x: jax.Array) -> jax.Array:
        return x[:, :-1].reshape(num_envs * (length - 1), *x.shape[2:])

    return {
        "state": first_steps(windows["state"]),
        "action": first_steps(windows["action"]),
        "goal": first_steps(goal),
    }


def shuffle_into_batches(key: jax.Array, transitions: Pytree, batch_size: int,
                         max_batches: int) -> Pytree:
    """A random permutation of the transitions cut into ``min(max_batches, N // batch_size)``
    batches: leaves ``[num_batches, batch_size, ...]``. Only the used rows are gathered."""
    total = jax.tree.leaves(transitions)[0].shape[0]
    num_batches = min(max_batches, total // batch_size)
    if num_batches == 0:
        raise ValueError(f"batch_size={batch_size} is larger than the {total} transitions")
    order = jax.random.permutation(key, total)[: num_batches * batch_size]
    return jax.tree.map(
        lambda x: x[order].reshape(num_batches, batch_size, *x.shape[1:]), transitions)
