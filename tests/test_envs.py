from collections import deque

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl import envs
from crl.envs.base import goal_distance
from crl.envs.maze import LayoutError, load_layout, parse_layout
from crl.envs.point_maze import PointMaze
from crl.envs.wrappers import EpisodeBatch


def test_unknown_env_names_the_closest_match_and_the_valid_names():
    with pytest.raises(envs.UnknownEnvError) as error:
        envs.get_spec("antmaze")
    message = str(error.value)
    assert "'antmaze'" in message and "did you mean 'ant_maze'" in message
    assert "point_u_maze" in message and "\n" not in message


def test_registry_has_the_ant_and_point_maze_families():
    for layout in envs.MAZE_LAYOUTS:
        assert f"ant_{layout}" in envs.ENV_NAMES and f"point_{layout}" in envs.ENV_NAMES
    assert envs.get_spec("ant_maze") is envs.get_spec("ant_u_maze")
    assert envs.get_spec("ant").default_backend == "spring"


def test_layout_errors_name_line_and_column():
    with pytest.raises(LayoutError, match=r"<layout>:2:3: unknown character 'x'"):
        parse_layout("###\n#Rx\n#G#")
    with pytest.raises(LayoutError, match=r"<layout>:3:1: ragged row"):
        parse_layout("####\n#RG#\n###")
    with pytest.raises(LayoutError, match="no start"):
        parse_layout("###\n#G#\n###")
    with pytest.raises(LayoutError, match="no goal"):
        parse_layout("###\n#R#\n###")
    with pytest.raises(LayoutError, match=r":2:3: a second start"):
        parse_layout("####\n#RR#\n#G.#")


def reachable_cells(layout) -> set[tuple[int, int]]:
    walls = layout.walls
    seen, queue = {layout.start}, deque([layout.start])
    while queue:
        i, j = queue.popleft()
        for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            n = (i + di, j + dj)
            if (0 <= n[0] < walls.shape[0] and 0 <= n[1] < walls.shape[1]
                    and not walls[n] and n not in seen):
                seen.add(n)
                queue.append(n)
    return seen


@pytest.mark.parametrize("name", envs.MAZE_LAYOUTS)
def test_every_goal_cell_is_reachable_from_the_start(name):
    layout = load_layout(name)
    assert set(layout.goals) <= reachable_cells(layout)


def test_wall_boxes_cover_exactly_the_wall_cells():
    layout = load_layout("hardest_maze")
    covered = np.zeros_like(layout.walls)
    for x, y, half_x, half_y in layout.wall_boxes(scale=1.0):
        rows = np.arange(round(x - half_x + 0.5), round(x + half_x + 0.5))
        cols = np.arange(round(y - half_y + 0.5), round(y + half_y + 0.5))
        covered[np.ix_(rows, cols)] = True
    np.testing.assert_array_equal(covered, layout.walls)
    assert len(layout.wall_boxes(1.0)) < layout.walls.sum()  # runs are merged


@pytest.fixture(scope="module")
def point_env():
    return PointMaze("u_maze")


def test_point_cannot_cross_a_wall(point_env):
    env = point_env
    step = jax.jit(env.step)
    state = env.reset(jax.random.PRNGKey(0))
    # u_maze: the start cell (1, 1) is centred at (4, 4); cell (2, 1) below it is wall, so the
    # point may go down to x = 6 - radius and no further however hard it pushes.
    for _ in range(30):
        state = step(state, jnp.array([1.0, 0.0]))
    x, y = np.asarray(state.obs[:2])
    assert 6 - env.radius - 0.01 < x < 6 - env.radius
    assert not env.in_wall(state.obs[:2])
    # Sliding along the wall works: pushing diagonally still moves along y.
    for _ in range(3):
        state = step(state, jnp.array([1.0, 1.0]))
    assert state.obs[1] > y + 2.5 and state.obs[0] < 6 - env.radius


def test_random_walks_never_enter_walls(point_env):
    env = point_env
    batch = EpisodeBatch(env, episode_length=50)
    state = batch.reset(jax.random.split(jax.random.PRNGKey(1), 64))

    def step(state, key):
        state = batch.step(state, jax.random.uniform(key, (64, 2), minval=-1, maxval=1))
        return state, state.obs

    _, obs = jax.lax.scan(step, state, jax.random.split(jax.random.PRNGKey(2), 200))
    in_wall = jax.vmap(jax.vmap(env.in_wall))(obs[..., :2])
    assert not np.any(in_wall)
    # Goals are never inside walls either (a goal is a point of zero size).
    goal_cells = np.floor(np.asarray(obs[..., 2:]) / env.scale + 0.5).astype(int)
    assert not np.any(env.layout.walls[goal_cells[..., 0], goal_cells[..., 1]])


def test_episode_batch_numbers_trajectories_and_resets_freshly(point_env):
    length, num_envs = 7, 4
    batch = EpisodeBatch(point_env, episode_length=length)
    state = batch.reset(jax.random.split(jax.random.PRNGKey(0), num_envs))
    ids, goals = [], []
    step = jax.jit(batch.step)
    for _ in range(3 * length):
        ids.append(np.asarray(state.info["traj_id"]))
        goals.append(np.asarray(state.obs[:, 2:]))
        state = step(state, jnp.zeros((num_envs, 2)))
    ids = np.stack(ids)
    np.testing.assert_array_equal(ids[:, 0], np.repeat(np.arange(3), length))
    goals = np.stack(goals)
    # The goal is fixed within an episode and redrawn at each reset.
    assert np.all(goals[1:length] == goals[0])
    assert not np.allclose(goals[length], goals[0])


def test_goal_distance_reads_the_observation():
    obs = jnp.array([[0.0, 3.0, 9.0, 4.0, 7.0]])  # state (0, 3, 9), goal (4, 7) at indices (1, 0)
    np.testing.assert_allclose(goal_distance(obs, 3, (1, 0)), [np.sqrt(1 + 49)])


def test_ant_maze_walls_push_the_ant_out():
    """An Ant placed overlapping a wall is pushed out of it and does not pass through."""
    env = envs.make_env("ant_u_maze")
    assert env.observation_size == 31 and env.action_size == 8
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    # Cell (2, 1) is wall: x in [6, 10] around y = 4. Put the torso 0.1 inside its face.
    q = state.pipeline_state.q.at[0].set(6.1).at[1].set(4.0)
    state = state.replace(pipeline_state=jax.jit(env.pipeline_init)(q, 0 * state.pipeline_state.qd))
    step = jax.jit(env.step)
    for _ in range(40):
        state = step(state, jnp.zeros(8))
    torso_x = float(state.pipeline_state.x.pos[0, 0])
    assert torso_x < 6.0 - 0.2, torso_x  # the torso sphere (radius 0.25) is out of the wall
    assert np.all(np.isfinite(np.asarray(state.obs)))
    # The goal marker never moves: the observation's goal stays where reset put it.
    np.testing.assert_allclose(state.obs[-2:], q[-2:], atol=1e-5)
