"""Trajectory replay over (time, env) and hindsight relabelling.

The buffer is a ring over time for every env at once: ``data`` leaves are ``[capacity, num_envs,
...]``. Sampling picks, for every env, one window of consecutive time steps; relabelling then
gives step t of a window the goal of a later step j of the same trajectory, with
P(j) proportional to discount^(j - t) (a truncated geometric over the steps left in the window),
or step t itself when no later step of its trajectory is in the window. Batches read from the
buffer only the steps they use.

Relabelling costs O(L) per window of length L: the number of later steps of the same trajectory
comes from one segment maximum, and the offset is drawn by inverting the truncated geometric CDF,
never by building an L x L probability matrix.
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


def sample_windows(buffer: ReplayBuffer, key: jax.Array, length: int) -> jax.Array:
    """One window of ``length`` consecutive steps per env, as the buffer's time rows:
    ``[num_envs, length]``. Each env's window starts uniformly among the positions where it fits
    in the stored history (the caller guarantees ``size >= length``). Nothing is copied: the
    steps are read later, and only those a batch uses."""
    capacity = buffer.capacity
    num_envs = jax.tree.leaves(buffer.data)[0].shape[1]
    oldest = (buffer.insert_position - buffer.size) % capacity
    starts = jax.random.randint(key, (num_envs,), 0, buffer.size - length + 1)
    return (oldest + starts[:, None] + jnp.arange(length)[None, :]) % capacity


def sample_future_steps(key: jax.Array, traj_id: jax.Array, discount: float) -> jax.Array:
    """For every step t of a window with trajectory ids ``traj_id`` (``[L]``), the step j whose
    state becomes t's goal: j = t + k with P(k) proportional to discount^(k-1), k = 1..n_t, where
    n_t is the number of later steps of t's trajectory in the window; j = t when n_t = 0."""
    length = traj_id.shape[0]
    t = jnp.arange(length)
    # Trajectories are contiguous in time and ids grow by one at each new episode, so the ids
    # relative to the first are segment numbers in [0, L): t's trajectory ends at the last step
    # of its segment (a scatter-max, O(L) on every backend).
    segment = traj_id - traj_id[0]
    last = jax.ops.segment_max(t, segment, num_segments=length, indices_are_sorted=True)
    n = last[segment] - t
    # Inverse CDF: P(k' <= k) = (1 - g^k) / (1 - g^n), so k = ceil(log(1 - u (1 - g^n)) / log g).
    log_discount = jnp.log(jnp.float32(discount))
    mass = -jnp.expm1(n * log_discount)  # 1 - g^n, accurate for small n
    u = jax.random.uniform(key, (length,))
    k = jnp.ceil(jnp.log1p(-u * mass) / log_discount).astype(jnp.int32)
    k = jnp.clip(k, 1, jnp.maximum(n, 1))
    return jnp.where(n > 0, t + k, t)


def relabel(key: jax.Array, traj_id: jax.Array, discount: float) -> jax.Array:
    """Hindsight goals of windows with trajectory ids ``[E, L]``: for every step, the position
    in its window of the step whose state is its goal, ``[E, L]``. O(L) per window."""
    keys = jax.random.split(key, traj_id.shape[0])
    return jax.vmap(sample_future_steps, in_axes=(0, 0, None))(keys, traj_id, discount)


def sample_batches(key: jax.Array, buffer: ReplayBuffer, rows: jax.Array, goal_steps: jax.Array,
                   goal_indices: tuple[int, ...], batch_size: int,
                   max_batches: int) -> dict[str, jax.Array]:
    """Batches of relabelled transitions from windows ``rows`` (``[E, L]``, from
    ``sample_windows``) and their goal positions ``goal_steps`` (from ``relabel``).

    The transitions are the first L - 1 steps of every window (the last has no later step), in
    a random order without repetition, cut into ``min(max_batches, E * (L - 1) // batch_size)``
    batches. Returns ``state``, ``action`` and ``goal`` with leaves
    ``[num_batches, batch_size, ...]``, reading from the buffer (whose data holds ``state`` and
    ``action``) only the rows that the batches use.
    """
    num_envs, length = rows.shape
    total = num_envs * (length - 1)
    num_batches = min(max_batches, total // batch_size)
    if num_batches == 0:
        raise ValueError(f"batch_size={batch_size} is larger than the {total} transitions")
    picked = jax.random.permutation(key, total)[: num_batches * batch_size]
    env, t = picked // (length - 1), picked % (length - 1)
    states, actions = buffer.data["state"], buffer.data["action"]
    row, goal_row = rows[env, t], rows[env, goal_steps[env, t]]
    transitions = {
        "state": states[row, env],
        "action": actions[row, env],
        "goal": states[goal_row, env][:, jnp.asarray(goal_indices)],
    }
    return jax.tree.map(lambda x: x.reshape(num_batches, batch_size, *x.shape[1:]), transitions)
