"""Trajectory replay over (time, env) and hindsight relabelling.

The buffer is a ring over time for every env at once: ``data`` leaves are ``[capacity, num_envs,
...]``. Sampling picks, for every env, one window of consecutive time steps; relabelling then
gives step t of a window the goal of a later step j of the same trajectory, with
P(j) proportional to discount^(j - t) (a truncated geometric over the steps left in the window)
or uniform over them, or step t itself when no later step of its trajectory is in the window.
Batches read from the buffer only the steps they use.

``sample`` is the one entry point the trainer calls: an agent's ``Sampling`` says which fields
its batches hold and how their goals are chosen (all hindsight, as CRL and GCBC ask; none, the
commanded goal, as plain SAC and TD3 ask; or a fraction, as HER asks). The reward of the TD
agents is computed here from the states, never read from the env.

Relabelling costs O(L) per window of length L: the number of later steps of the same trajectory
comes from one segment maximum, and the offset is drawn by inverting the truncated geometric CDF,
never by building an L x L probability matrix.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from crl.envs.base import goal_distance

Pytree = Any

# What a batch can hold, each [num_batches, batch_size, ...]: the state, the action taken, the
# goal (hindsight or commanded), the next state of the trajectory, the sparse reward 1[next
# state within the success radius of the goal], and whether the next state belongs to the same
# trajectory (where it does not, the episode ended and the transition has no next state).
FIELDS = ("state", "action", "goal", "next_state", "reward", "same_trajectory")
FUTURES = ("geometric", "uniform")


@dataclasses.dataclass(frozen=True)
class Sampling:
    """What an agent's batches hold and how their goals are chosen."""

    fields: tuple[str, ...] = ("state", "action", "goal")
    hindsight_fraction: float = 1.0
    """Share of goals replaced by a later state of the same trajectory; the others are the goal
    the env commanded (stored in the buffer only when some are needed)."""
    future: str = "geometric"
    """Which later state: geometric (P(j) ~ discount^(j - t)) or uniform over the later steps
    of the window (HER's "future" strategy)."""
    discount: float = 0.99

    def __post_init__(self):
        unknown = sorted(set(self.fields) - set(FIELDS))
        if unknown or self.future not in FUTURES or not 0 <= self.hindsight_fraction <= 1:
            raise ValueError(f"invalid sampling {self}: fields from {FIELDS}, future from "
                             f"{FUTURES}, hindsight_fraction in [0, 1]")

    @property
    def stores_commanded_goal(self) -> bool:
        return self.hindsight_fraction < 1


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


def stored_steps(buffer: ReplayBuffer) -> dict[str, np.ndarray]:
    """The buffer's valid time rows, oldest first, on the host: ``{field: [size, num_envs,
    ...]}`` (the dataset ``--save-buffer`` writes; docs/runs.md)."""
    host = jax.device_get(buffer)
    size = int(host.size)
    rows = (int(host.insert_position) - size + np.arange(size)) % buffer.capacity
    return {name: np.asarray(values)[rows] for name, values in host.data.items()}


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


def sample_future_steps(key: jax.Array, traj_id: jax.Array, discount: float,
                        future: str = "geometric") -> jax.Array:
    """For every step t of a window with trajectory ids ``traj_id`` (``[L]``), the step j whose
    state becomes t's goal: j = t + k with P(k) proportional to discount^(k-1) (``geometric``)
    or constant (``uniform``), k = 1..n_t, where n_t is the number of later steps of t's
    trajectory in the window; j = t when n_t = 0."""
    length = traj_id.shape[0]
    t = jnp.arange(length)
    # Trajectories are contiguous in time and ids grow by one at each new episode, so the ids
    # relative to the first are segment numbers in [0, L): t's trajectory ends at the last step
    # of its segment (a scatter-max, O(L) on every backend).
    segment = traj_id - traj_id[0]
    last = jax.ops.segment_max(t, segment, num_segments=length, indices_are_sorted=True)
    n = last[segment] - t
    u = jax.random.uniform(key, (length,))
    if future == "uniform":
        k = 1 + jnp.floor(u * n).astype(jnp.int32)
        return jnp.where(n > 0, t + jnp.clip(k, 1, jnp.maximum(n, 1)), t)
    # Inverse CDF: P(k' <= k) = (1 - g^k) / (1 - g^n), so k = ceil(log(1 - u (1 - g^n)) / log g).
    log_discount = jnp.log(jnp.float32(discount))
    mass = -jnp.expm1(n * log_discount)  # 1 - g^n, accurate for small n
    k = jnp.ceil(jnp.log1p(-u * mass) / log_discount).astype(jnp.int32)
    k = jnp.clip(k, 1, jnp.maximum(n, 1))
    return jnp.where(n > 0, t + k, t)


def relabel(key: jax.Array, traj_id: jax.Array, discount: float,
            future: str = "geometric") -> jax.Array:
    """Hindsight goals of windows with trajectory ids ``[E, L]``: for every step, the position
    in its window of the step whose state is its goal, ``[E, L]``. O(L) per window."""
    keys = jax.random.split(key, traj_id.shape[0])
    return jax.vmap(sample_future_steps, in_axes=(0, 0, None, None))(keys, traj_id, discount,
                                                                     future)


def sample_batches(key: jax.Array, buffer: ReplayBuffer, rows: jax.Array, goal_steps: jax.Array,
                   goal_indices: tuple[int, ...], batch_size: int, max_batches: int,
                   sampling: Sampling = Sampling(), success_radius: float = 0.0,
                   mix_key: jax.Array | None = None) -> dict[str, jax.Array]:
    """Batches of relabelled transitions from windows ``rows`` (``[E, L]``, from
    ``sample_windows``) and their hindsight goal positions ``goal_steps`` (from ``relabel``).

    The transitions are the first L - 1 steps of every window (the last has no later step), in
    a random order without repetition, cut into ``min(max_batches, E * (L - 1) // batch_size)``
    batches. Returns ``sampling.fields`` with leaves ``[num_batches, batch_size, ...]``, reading
    from the buffer (whose data holds ``state``, ``action``, ``traj_id`` and, where some goals
    are the commanded ones, ``goal``) only the rows that the batches use. ``mix_key`` draws
    which goals are hindsight ones when ``sampling.hindsight_fraction`` is below 1.
    """
    num_envs, length = rows.shape
    total = num_envs * (length - 1)
    num_batches = min(max_batches, total // batch_size)
    if num_batches == 0:
        raise ValueError(f"batch_size={batch_size} is larger than the {total} transitions")
    picked = jax.random.permutation(key, total)[: num_batches * batch_size]
    env, t = picked // (length - 1), picked % (length - 1)
    data, goal_indices = buffer.data, jnp.asarray(goal_indices)
    row, goal_row, next_row = rows[env, t], rows[env, goal_steps[env, t]], rows[env, t + 1]
    fields = set(sampling.fields)
    goal = data["state"][goal_row, env][:, goal_indices]
    if sampling.hindsight_fraction < 1:
        hindsight = jax.random.uniform(mix_key, (goal.shape[0],)) < sampling.hindsight_fraction
        goal = jnp.where(hindsight[:, None], goal, data["goal"][row, env])
    transitions = {"state": data["state"][row, env], "action": data["action"][row, env],
                   "goal": goal}
    if fields & {"next_state", "reward"}:
        transitions["next_state"] = data["state"][next_row, env]
    if "reward" in fields:
        # The success indicator of the goal-reaching task, as evaluation scores it.
        observation = jnp.concatenate([transitions["next_state"], goal], -1)
        distance = goal_distance(observation, data["state"].shape[-1], tuple(goal_indices))
        transitions["reward"] = (distance < success_radius).astype(jnp.float32)
    if "same_trajectory" in fields:
        transitions["same_trajectory"] = (data["traj_id"][next_row, env]
                                          == data["traj_id"][row, env])
    transitions = {name: transitions[name] for name in sampling.fields}
    return jax.tree.map(lambda x: x.reshape(num_batches, batch_size, *x.shape[1:]), transitions)


def sample(keys: jax.Array, buffer: ReplayBuffer, sampling: Sampling, *, window_length: int,
           goal_indices: tuple[int, ...], success_radius: float, batch_size: int,
           max_batches: int) -> dict[str, jax.Array]:
    """Batches for one training step, as ``sampling`` asks: one window of ``window_length``
    steps per env, its hindsight goals, and up to ``max_batches`` batches of its transitions.
    ``keys``: three keys, for the windows, the goals and the order of the transitions."""
    window_key, relabel_key, shuffle_key = keys
    rows = sample_windows(buffer, window_key, window_length)
    num_envs = rows.shape[0]
    traj_id = buffer.data["traj_id"][rows, jnp.arange(num_envs)[:, None]]
    goal_steps = relabel(relabel_key, traj_id, sampling.discount, sampling.future)
    mix_key = jax.random.fold_in(relabel_key, 1) if sampling.hindsight_fraction < 1 else None
    return sample_batches(shuffle_key, buffer, rows, goal_steps, goal_indices, batch_size,
                          max_batches, sampling, success_radius, mix_key)
