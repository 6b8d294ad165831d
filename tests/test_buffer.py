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


def test_relabel_takes_goals_from_the_sampled_future_states():
    num_envs, length = 3, 14
    state = jnp.arange(num_envs * length * 3, dtype=jnp.float32).reshape(num_envs, length, 3)
    windows = {"state": state, "action": -state[..., :2],
               "traj_id": jnp.tile(jnp.asarray(TRAJ_ID), (num_envs, 1))}
    out = buffer.relabel(jax.random.PRNGKey(0), windows, (2, 0), 0.9)
    assert out["state"].shape == (num_envs * (length - 1), 3)
    assert out["action"].shape == (num_envs * (length - 1), 2)
    assert out["goal"].shape == (num_envs * (length - 1), 2)
    flat_states = np.asarray(state).reshape(-1, 3)
    for row in range(out["goal"].shape[0]):
        env, t = divmod(row, length - 1)
        # The goal is the (x2, x0) of some state of the same env and trajectory at j >= t.
        matches = np.flatnonzero((flat_states[:, [2, 0]] == np.asarray(out["goal"][row])).all(1))
        assert len(matches) == 1
        j_env, j = divmod(matches[0], length)
        assert j_env == env and j >= t and TRAJ_ID[j] == TRAJ_ID[t]
        np.testing.assert_array_equal(out["state"][row], state[env, t])


def test_insert_wraps_and_windows_are_consecutive():
    capacity, num_envs = 10, 3
    empty = buffer.init_buffer({"step": jnp.zeros((num_envs,), jnp.int32)}, capacity)
    state = empty
    for first in range(0, 16, 4):  # four inserts of four steps: wraps the ring
        steps = first + jnp.arange(4)[:, None] + jnp.zeros((1, num_envs), jnp.int32)
        state = buffer.insert(state, {"step": steps * 10 + jnp.arange(num_envs)})
    assert int(state.size) == capacity and int(state.insert_position) == 6
    for seed in range(20):
        window = buffer.sample_windows(state, jax.random.PRNGKey(seed), 7)["step"]
        window = np.asarray(window)
        assert window.shape == (num_envs, 7)
        np.testing.assert_array_equal(window % 10, np.repeat(np.arange(num_envs)[:, None], 7, 1))
        steps = window // 10
        np.testing.assert_array_equal(np.diff(steps, axis=1), 1)  # consecutive in time
        assert steps.min() >= 6 and steps.max() <= 15  # only the 10 most recent steps
    with pytest.raises(ValueError, match="capacity 10"):
        buffer.insert(empty, {"step": jnp.zeros((11, num_envs), jnp.int32)})


def test_shuffle_into_batches_is_a_permutation():
    transitions = {"x": jnp.arange(50)}
    batches = buffer.shuffle_into_batches(jax.random.PRNGKey(0), transitions, 8, 100)["x"]
    assert batches.shape == (6, 8)
    assert len(np.unique(batches)) == 48
    assert not np.array_equal(np.sort(batches.ravel()), batches.ravel())
    capped = buffer.shuffle_into_batches(jax.random.PRNGKey(0), transitions, 8, 2)["x"]
    assert capped.shape == (2, 8)
    with pytest.raises(ValueError, match="batch_size=64"):
        buffer.shuffle_into_batches(jax.random.PRNGKey(0), transitions, 64, 2)


def _compiled_cost(fn, length: int, num_envs: int = 8) -> float:
    args = (jax.random.PRNGKey(0), jnp.zeros((num_envs, length), jnp.int32),
            jnp.zeros((num_envs, length, 4)), jnp.zeros((num_envs, length, 2)))
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    return cost["flops"] + cost["bytes accessed"]


def _relabel(key, traj_id, state, action):
    windows = {"traj_id": traj_id, "state": state, "action": action}
    return buffer.relabel(key, windows, (0, 1), 0.99)


def _relabel_with_matrix(key, traj_id, state, action):
    """The public implementations' way: an L x L probability matrix per window."""
    length = traj_id.shape[1]
    t = jnp.arange(length)
    later = (t[None, :] > t[:, None])[None] & (traj_id[:, None, :] == traj_id[:, :, None])
    logits = jnp.where(later, (t[None, :] - t[:, None]) * jnp.log(0.99), -jnp.inf)
    logits = jnp.where(later.any(-1, keepdims=True), logits, jnp.where(
        jnp.eye(length, dtype=bool), 0.0, -jnp.inf))
    future = jax.random.categorical(key, logits)
    goal = jnp.take_along_axis(state[..., :2], future[..., None], axis=1)
    return state[:, :-1], action[:, :-1], goal[:, :-1]


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
