import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from crl import buffer


def exact_future_probabilities(traj_id: np.ndarray, discount: float) -> np.ndarray:
    """The reference distribution as an L x L matrix (the O(L^2) construction): row t gives
    P(goal from step j), proportional to discount^(j - t) over later steps of t's trajectory,
    or all mass on t when there is none."""
    length = len(traj_id)
    t, j = np.meshgrid(np.arange(length), np.arange(length), indexing="ij")
    weights = np.where((j > t) & (traj_id[None, :] == traj_id[:, None]),
                       discount ** (j - t).astype(np.float64), 0.0)
    weights[weights.sum(1) == 0] = np.eye(length)[weights.sum(1) == 0]
    return weights / weights.sum(1, keepdims=True)


# Three trajectories in one window: the first cut by the window start, steps 3 and 9 are the
# last steps of their episodes, the last trajectory is cut by the window end.
TRAJ_ID = np.array([4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6], np.int32)


@pytest.mark.parametrize("discount", [0.99, 0.6])
def test_future_steps_follow_the_exact_distribution(discount):
    draws = 100_000
    keys = jax.random.split(jax.random.PRNGKey(1), draws)
    sample = jax.jit(jax.vmap(buffer.sample_future_steps, in_axes=(0, None, None)),
                     static_argnums=2)
    future = np.asarray(sample(keys, jnp.asarray(TRAJ_ID), discount))  # [draws, L]
    probabilities = exact_future_probabilities(TRAJ_ID, discount)
    for t in range(len(TRAJ_ID)):
        support = probabilities[t] > 0
        assert np.all(support[future[:, t]]), f"step {t} drew a goal outside its trajectory"
        if support.sum() == 1:
            assert np.all(future[:, t] == np.flatnonzero(support)[0])
            continue
        observed = np.bincount(future[:, t], minlength=len(TRAJ_ID))[support]
        expected = probabilities[t][support] * draws
        p_value = stats.chisquare(observed, expected).pvalue
        assert p_value > 1e-4, f"step {t}: chi-square p={p_value:.2g}"
    # The last step of an episode and of the window keep their own state as goal.
    assert np.all(future[:, 3] == 3) and np.all(future[:, 9] == 9) and np.all(future[:, 13] == 13)


def filled_buffer(capacity: int, num_envs: int, steps: int, episode: int) -> buffer.ReplayBuffer:
    """A buffer whose states say where they come from: state = (time, env, time % episode)."""
    time = np.arange(steps)[:, None] + np.zeros((1, num_envs), int)
    env = np.zeros((steps, 1), int) + np.arange(num_envs)[None, :]
    data = {"state": jnp.asarray(np.stack([time, env, time % episode], -1), jnp.float32),
            "action": jnp.asarray(-time, jnp.float32)[..., None],
            "traj_id": jnp.asarray(time // episode, jnp.int32)}
    empty = buffer.init_buffer(jax.tree.map(lambda x: x[0], data), capacity)
    return buffer.insert(empty, data)


def test_batches_hold_relabelled_transitions_of_their_windows():
    num_envs, length, episode = 4, 30, 12
    replay = filled_buffer(capacity=50, num_envs=num_envs, steps=50, episode=episode)
    rows = buffer.sample_windows(replay, jax.random.PRNGKey(0), length)
    traj_id = replay.data["traj_id"][rows, jnp.arange(num_envs)[:, None]]
    goal_steps = buffer.relabel(jax.random.PRNGKey(1), traj_id, 0.9)
    batches = buffer.sample_batches(jax.random.PRNGKey(2), replay, rows, goal_steps, (2, 0),
                                    batch_size=16, max_batches=100)
    assert batches["state"].shape == (num_envs * (length - 1) // 16, 16, 3)
    assert batches["action"].shape[:2] == batches["goal"].shape[:2] == (7, 16)
    state = np.asarray(batches["state"]).reshape(-1, 3)
    goal = np.asarray(batches["goal"]).reshape(-1, 2)
    action = np.asarray(batches["action"]).reshape(-1)
    time, env = state[:, 0].astype(int), state[:, 1].astype(int)
    window_start = np.asarray(rows)[env, 0]
    assert len(set(zip(time, env, strict=True))) == len(time)  # no transition twice
    assert np.all(time >= window_start) and np.all(time < window_start + length - 1)
    np.testing.assert_array_equal(action, -time)
    # The goal is (time % episode, time) of a later step of the same env and episode: goal[1]
    # is its time, in the window, after t, with the same episode.
    goal_time = goal[:, 1].astype(int)
    np.testing.assert_array_equal(goal[:, 0], goal_time % episode)
    assert np.all(goal_time < window_start + length)
    last_of_episode = time % episode == episode - 1
    assert np.all(goal_time[last_of_episode] == time[last_of_episode])
    later = ~last_of_episode
    assert np.all(goal_time[later] > time[later])
    assert np.all(goal_time // episode == time // episode)
    with pytest.raises(ValueError, match="batch_size=200"):
        buffer.sample_batches(jax.random.PRNGKey(2), replay, rows, goal_steps, (0,), 200, 1)


def test_insert_wraps_and_windows_are_consecutive():
    capacity, num_envs = 10, 3
    empty = buffer.init_buffer({"step": jnp.zeros((num_envs,), jnp.int32)}, capacity)
    state = empty
    for first in range(0, 16, 4):  # four inserts of four steps: wraps the ring
        steps = first + jnp.arange(4)[:, None] + jnp.zeros((1, num_envs), jnp.int32)
        state = buffer.insert(state, {"step": steps * 10 + jnp.arange(num_envs)})
    assert int(state.size) == capacity and int(state.insert_position) == 6
    for seed in range(20):
        rows = buffer.sample_windows(state, jax.random.PRNGKey(seed), 7)
        window = np.asarray(state.data["step"][rows, jnp.arange(num_envs)[:, None]])
        assert window.shape == (num_envs, 7)
        np.testing.assert_array_equal(window % 10, np.repeat(np.arange(num_envs)[:, None], 7, 1))
        steps = window // 10
        np.testing.assert_array_equal(np.diff(steps, axis=1), 1)  # consecutive in time
        assert steps.min() >= 6 and steps.max() <= 15  # only the 10 most recent steps
    with pytest.raises(ValueError, match="capacity 10"):
        buffer.insert(empty, {"step": jnp.zeros((11, num_envs), jnp.int32)})


def _compiled_cost(fn, length: int, num_envs: int = 8) -> float:
    args = (jax.random.PRNGKey(0), jnp.zeros((num_envs, length), jnp.int32))
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    return cost["flops"] + cost["bytes accessed"]


def _relabel(key, traj_id):
    return buffer.relabel(key, traj_id, 0.99)


def _relabel_with_matrix(key, traj_id):
    """The public implementations' way: an L x L probability matrix per window."""
    length = traj_id.shape[1]
    t = jnp.arange(length)
    later = (t[None, :] > t[:, None])[None] & (traj_id[:, None, :] == traj_id[:, :, None])
    logits = jnp.where(later, (t[None, :] - t[:, None]) * jnp.log(0.99), -jnp.inf)
    logits = jnp.where(later.any(-1, keepdims=True), logits, jnp.where(
        jnp.eye(length, dtype=bool), 0.0, -jnp.inf))
    return jax.random.categorical(key, logits)


def test_relabelling_cost_grows_linearly_in_the_window_length():
    """XLA's own count of the compiled relabelling's flops and bytes: each doubling of the
    window costs about 2x (a quadratic method, measured the same way, costs about 4x)."""
    lengths = (250, 500, 1000, 2000)
    ours = [_compiled_cost(_relabel, n) for n in lengths]
    matrix = [_compiled_cost(_relabel_with_matrix, n) for n in lengths]
    our_ratios = np.array(ours[1:]) / np.array(ours[:-1])
    matrix_ratios = np.array(matrix[1:]) / np.array(matrix[:-1])
    assert np.all(our_ratios < 2.3), our_ratios
    assert np.all(matrix_ratios > 3.5), matrix_ratios  # the measure does see quadratic growth


def test_the_saved_dataset_is_the_stored_steps_oldest_first():
    """Capacity 5, three inserts of 2 rows (values 0..5): the ring has overwritten row 0 with 4
    and row 1 with 5; the dataset reads 1, 2, 3, 4, 5."""
    ring = buffer.init_buffer({"state": jnp.zeros((3, 1))}, capacity=5)
    for first in (0, 2, 4):
        rows = jnp.arange(first, first + 2, dtype=jnp.float32)[:, None, None]
        ring = buffer.insert(ring, {"state": jnp.broadcast_to(rows, (2, 3, 1))})
    steps = buffer.stored_steps(ring)
    np.testing.assert_array_equal(steps["state"][:, :, 0], np.arange(1, 6)[:, None] * np.ones(3))
