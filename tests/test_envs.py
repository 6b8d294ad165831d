import dataclasses
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl import envs
from crl.config import Config, ConfigError, fixed_field_refusal, validate
from crl.envs.base import goal_distance
from crl.envs.maze import (
    LayoutError,
    MazeLayout,
    forward_pairs,
    forward_path,
    load_layout,
    parse_layout,
    reachable_cells,
)
from crl.envs.point_maze import PointMaze
from crl.envs.wrappers import EpisodeBatch

SMALL = Config(env="point_u_maze", num_envs=4, batch_size=8, episode_length=20,
               min_replay_size=20, max_replay_size=100, total_env_steps=10_000, num_epochs=2,
               unroll_length=10, num_eval_envs=4)


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


def test_the_humanoids_big_eval_maze_is_the_papers():
    """The paper's code gives the Humanoid its own Big Maze for evaluation: the Ant's, with row
    2 read '#..#.GG#' (one more goal cell)."""
    ant = load_layout(envs.get_spec("ant_big_maze_eval").kwargs["layout"])
    humanoid = load_layout(envs.get_spec("humanoid_big_maze_eval").kwargs["layout"])
    assert humanoid.rows[2] == "#..#.GG#" and ant.rows[2] == "#..#..G#"
    assert humanoid.rows[:2] + humanoid.rows[3:] == ant.rows[:2] + ant.rows[3:]


@pytest.mark.parametrize(("layout", "corridor"), [("u2_maze", 4 + 1 + 4), ("u3_maze", 5 + 1 + 5),
                                                  ("u6_maze", 2 + 4 + 3 + 5 + 1),
                                                  ("u7_maze", 2 + 3 + 3 + 4 + 1)])
def test_the_papers_other_ant_u_mazes_and_their_eval_variants(layout, corridor):
    """The paper code's ant_u2/u3/u6/u7 mazes: one corridor of the length counted by hand from
    its layouts, a goal in every cell but the start's; the _eval variant keeps the walls and
    the start and only the goals of the corridor's second half."""
    train, evaluation = load_layout(layout), load_layout(f"{layout}_eval")
    path = forward_path(train)
    assert len(path) == corridor and set(train.goals) == set(path[1:])
    assert np.array_equal(train.walls, evaluation.walls) and train.start == evaluation.start
    assert set(evaluation.goals) <= set(path[len(path) // 2:])
    assert f"ant_{layout}" in envs.ENV_NAMES and f"ant_{layout}_eval" in envs.ENV_NAMES
    assert envs.get_spec(f"ant_{layout}").reset == "first_state"


@pytest.mark.parametrize("name", envs.MAZE_LAYOUTS + envs.OWN_LAYOUTS)
def test_every_goal_cell_is_reachable_from_the_start(name):
    layout = load_layout(name)
    assert set(layout.goals) <= reachable_cells(layout)


def test_reachability_follows_corridors_and_unreachable_goals_are_rejected():
    layout = MazeLayout(("#####", "#R.##", "###G#", "#####"))
    assert reachable_cells(layout) == {(1, 1), (1, 2)}  # no diagonal step to (2, 3)
    with pytest.raises(LayoutError, match=r"<layout>:3:4: goal cell 'G' cannot be reached"):
        parse_layout("#####\n#R.##\n###G#\n#####")


def test_wall_boxes_cover_exactly_the_wall_cells():
    layout = load_layout("hardest_maze")
    boxes = layout.wall_boxes(scale=2.0)
    np.testing.assert_array_equal(covered_cells(boxes, 2.0, layout.walls.shape), layout.walls)
    assert len(boxes) < len(re.findall("#+", "/".join(layout.rows)))  # runs merge across rows


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


def test_under_first_state_every_episode_restarts_from_the_first_ones_start_and_goal(
        point_env):
    """Brax's AutoResetWrapper, as the paper's code uses it: after an episode ends (here by its
    length), the env is back at the state its first episode started from, start and goal
    alike, under a new trajectory id."""
    length, num_envs = 5, 3
    batch = EpisodeBatch(point_env, episode_length=length, reset="first_state")
    state = batch.reset(jax.random.split(jax.random.PRNGKey(0), num_envs))
    first = np.asarray(state.obs)
    assert len({tuple(row[2:]) for row in first}) == num_envs  # each env its own goal
    step = jax.jit(batch.step)
    for episode in range(1, 4):
        for _ in range(length):
            state = step(state, jnp.ones((num_envs, 2)))
        np.testing.assert_array_equal(np.asarray(state.obs), first)
        np.testing.assert_array_equal(np.asarray(state.info["traj_id"]), episode)
    with pytest.raises(ValueError, match="reset='fresh' is unknown; valid: first_state, resample"):
        EpisodeBatch(point_env, episode_length=length, reset="fresh")


def test_the_papers_envs_restart_from_their_first_state_by_default_and_runs_record_it():
    """Every task the paper reports on keeps its first start and goal (the paper's setting);
    crl's own point mazes draw new ones. The resolved choice is the run's config, and a resumed
    run cannot change it (its envs' states hold the first states)."""
    for name, spec in envs.REGISTRY.items():
        expected = "resample" if name.startswith("point_") else "first_state"
        assert spec.reset == expected, name
    assert validate(Config(env="ant_big_maze")).reset == "first_state"
    assert validate(Config(env="point_u_maze")).reset == "resample"
    assert validate(Config(env="ant_big_maze", reset="resample")).reset == "resample"
    with pytest.raises(ConfigError, match="reset='again' is unknown; valid: first_state, "
                                          "resample"):
        validate(Config(env="ant_big_maze", reset="again"))
    saved = validate(Config(env="ant_big_maze"))
    refusal = fixed_field_refusal(saved, validate(Config(env="ant_big_maze", reset="resample")))
    assert "reset 'first_state' -> 'resample'" in refusal


def test_reachers_target_radius_is_uniform_as_in_the_papers_code():
    """The target's distance from the centre is U[0, 0.2] (a Kolmogorov-Smirnov distance
    below its 1% critical value at 4,000 draws); spread evenly over the disc instead, the
    radius's distribution (r / 0.2)^2 is 0.25 away from it and the test would fail."""
    from crl.envs.reacher import Reacher

    keys = jax.random.split(jax.random.PRNGKey(3), 4000)
    critical = 1.63 / np.sqrt(len(keys))
    for uniform_over_disc, radius_cdf in ((False, lambda r: r / 0.2),
                                          (True, lambda r: (r / 0.2) ** 2)):
        env = Reacher(uniform_over_disc=uniform_over_disc)
        q, _ = jax.jit(jax.vmap(env.initial_q_qd))(keys)
        radii = np.sort(np.hypot(*np.asarray(q[:, 2:4]).T))
        assert radii.max() <= 0.2 + 1e-6
        empirical = np.arange(1, len(radii) + 1) / len(radii)
        distance = np.max(np.abs(empirical - radius_cdf(radii)))
        assert distance < critical, (uniform_over_disc, distance)
    assert np.max(np.abs(empirical - radii / 0.2)) > 0.2  # the two laws are told apart


def test_goal_distance_reads_the_observation():
    obs = jnp.array([[0.0, 3.0, 9.0, 4.0, 7.0]])  # state (0, 3, 9), goal (4, 7) at indices (1, 0)
    np.testing.assert_allclose(goal_distance(obs, 3, (1, 0)), [np.sqrt(1 + 49)])


# ---------------------------------------------------------------- the registry and the suite
PAPER_AND_BENCHMARK = (
    "reacher", "pusher_easy", "pusher_hard", "cheetah", "ant", "ant_ball", "ant_push",
    "ant_u_maze", "ant_u4_maze", "ant_u5_maze", "ant_big_maze", "ant_hardest_maze", "humanoid",
    "humanoid_u_maze", "humanoid_big_maze", "humanoid_hardest_maze")


def test_registry_holds_every_task_of_the_paper_and_the_benchmark():
    for name in PAPER_AND_BENCHMARK:
        assert name in envs.ENV_NAMES, name
        spec = envs.get_spec(name)
        radius = {"reacher": 0.05, "pusher_easy": 0.1, "pusher_hard": 0.1}.get(name, 0.5)
        assert spec.success_radius == radius and spec.episode_length == 1000, name
        # The paper's code runs Reacher and Pusher on spring too and ant_push on MJX; Cheetah
        # is the benchmark's.
        default = {"cheetah": "generalized", "ant_push": "mjx"}.get(name, "spring")
        assert spec.default_backend == default, name
    for name in ("ant_u_maze", "ant_big_maze", "humanoid_u_maze", "humanoid_big_maze"):
        assert f"{name}_eval" in envs.ENV_NAMES
    # The paper's arm tasks, in its code's 1000-step episodes; the others are shorter. Its env
    # step: 25 physics steps of 2 ms.
    for name in ("arm_push_easy", "arm_push_hard", "arm_binpick_hard"):
        assert envs.get_spec(name).episode_length == 1000, name
    assert envs.get_spec("arm_reach").episode_length == 100
    assert abs(float(envs.make_env("arm_push_easy").dt) - 0.05) < 1e-7


@pytest.mark.parametrize("name", ["reacher", "pusher_easy", "cheetah", "ant", "humanoid"])
def test_every_pipeline_builds_with_brax_settings_and_the_same_control_step(name):
    dts = {backend: float(envs.make_env(name, backend).dt) for backend in envs.BACKENDS}
    assert {envs.make_env(name, backend).backend for backend in envs.BACKENDS} == set(
        envs.BACKENDS)
    # Brax's per-pipeline timesteps and frame counts keep one env step equally long.
    assert max(dts.values()) - min(dts.values()) < 1e-6, dts


def test_listing_shows_every_env_with_its_sizes(capsys):
    from crl.envs.__main__ import main

    main([])
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line.strip()}
    for name, spec in envs.REGISTRY.items():
        env = spec.make()
        assert rows[name][1:3] == [str(env.observation_size), str(env.action_size)], name
        assert rows[name][-1] == (spec.default_backend or "JAX"), name
        assert rows[name][-2 if spec.default_backend else -3] == spec.reset, name
    assert "ant_maze = ant_u_maze" in out


# ---------------------------------------------------------------- mazes, packaged and custom
MAZE_ENVS = [name for name, spec in envs.REGISTRY.items() if spec.is_maze]


def covered_cells(boxes, scale: float, shape: tuple[int, int]) -> np.ndarray:
    """Which cells the boxes ``(x, y, half_x, half_y)`` fill."""
    covered = np.zeros(shape, bool)
    for x, y, half_x, half_y in boxes:
        rows = np.arange(round((x - half_x) / scale + 0.5), round((x + half_x) / scale + 0.5))
        cols = np.arange(round((y - half_y) / scale + 0.5), round((y + half_y) / scale + 0.5))
        covered[np.ix_(rows, cols)] = True
    return covered


def model_walls(env) -> np.ndarray:
    """The wall cells of a physics maze, read off its MuJoCo model."""
    import mujoco

    model = env.sys.mj_model
    boxes = []
    for geom in range(model.ngeom):
        if (mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, geom) or "").startswith("wall_"):
            (x, y, z), (half_x, half_y, half_z) = model.geom_pos[geom], model.geom_size[geom]
            # mazes.txt: a wall block is 0.5 scale tall and stands on the floor
            assert np.isclose(z, 0.25 * env.scale) and np.isclose(half_z, 0.25 * env.scale)
            boxes.append((x, y, half_x, half_y))
    return covered_cells(boxes, env.scale, env.layout.walls.shape)


def maze_walls(env) -> np.ndarray:
    if isinstance(env, PointMaze):
        return np.asarray(env._walls)[1:-1, 1:-1]  # drop the padding
    return model_walls(env)


def sample_tasks(env, count: int) -> tuple[np.ndarray, np.ndarray]:
    keys = jax.random.split(jax.random.PRNGKey(0), count)
    return tuple(map(np.asarray, jax.vmap(env.sample_start_and_goal)(keys)))


def cells_of(points: np.ndarray, scale: float) -> set[tuple[int, int]]:
    return {tuple(cell) for cell in np.floor(points / scale + 0.5).astype(int)}


@pytest.mark.parametrize("name", MAZE_ENVS)
def test_maze_walls_start_and_goals_are_where_the_layout_says(name):
    env = envs.make_env(name)
    layout = load_layout(envs.get_spec(name).kwargs["layout"])
    assert env.layout == layout
    np.testing.assert_array_equal(maze_walls(env), layout.walls)
    starts, goals = sample_tasks(env, 2000)
    assert cells_of(starts, env.scale) == {layout.start}
    # Every G cell is drawn, nothing else is, and so no goal is inside a wall.
    assert cells_of(goals, env.scale) == set(layout.goals)


CUSTOM = "######/#R..G#/#.##.#/#G...#/######"


@pytest.mark.parametrize("name", ["point_maze", "ant_maze", "humanoid_u_maze"])
def test_every_maze_family_takes_a_custom_layout(name, tmp_path):
    path = tmp_path / "custom.txt"
    path.write_text("; a custom maze\n" + CUSTOM.replace("/", "\n") + "\n")
    for layout in (CUSTOM, str(path)):
        env = envs.make_env(name, maze_layout=layout)
        assert env.layout.rows == tuple(CUSTOM.split("/"))
        np.testing.assert_array_equal(maze_walls(env), env.layout.walls)
        starts, goals = sample_tasks(env, 500)
        assert cells_of(starts, env.scale) == {(1, 1)}
        assert cells_of(goals, env.scale) == {(1, 4), (3, 1)}


def test_a_layout_for_a_non_maze_env_is_refused():
    with pytest.raises(ValueError, match="not a maze"):
        envs.make_env("ant_push", maze_layout=CUSTOM)


@pytest.mark.parametrize(("layout", "message"), [
    ("#####/#R.x#/#G###", r"<layout>:2:4: unknown character 'x'"),
    ("#####/#R.G#/####", r"<layout>:3:1: ragged row of 4 cells"),
    ("#####/#..G#/#####", r"<layout>: no start cell 'R'"),
    ("#####/#R..#/#####", r"<layout>: no goal cell 'G'"),
    ("nowhere.txt", r"no maze layout 'nowhere.txt'"),
])
def test_a_bad_maze_layout_is_rejected_by_validation(layout, message):
    config = dataclasses.replace(SMALL, env="ant_maze", maze_layout=layout)
    with pytest.raises(ConfigError, match="maze_layout: " + message):
        validate(config)


def test_maze_layout_is_accepted_for_mazes_only():
    assert validate(dataclasses.replace(SMALL, maze_layout=CUSTOM)).maze_layout == CUSTOM
    with pytest.raises(ConfigError, match=r"env 'ant' is not a maze; --maze-layout applies to "
                                          r"the maze envs \(ant_<layout>, humanoid_<layout>"):
        validate(dataclasses.replace(SMALL, env="ant", maze_layout=CUSTOM))


def test_a_malformed_layout_file_fails_the_command_line_with_its_line_and_column(tmp_path):
    path = tmp_path / "maze.txt"
    path.write_text("#####\n#R.G#\n#.#\n#####\n")
    result = subprocess.run([sys.executable, "-m", "crl.train", "--env", "humanoid_u_maze",
                             "--maze-layout", str(path), "--run-dir", str(tmp_path / "runs")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("crl: error")]
    assert errors == [f"crl: error: maze_layout: {path}:3:1: ragged row of 3 cells; the first "
                      "row (line 1) has 5"]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("kind", "region"), [
    ("easy", ((-0.55, -0.25), (-0.2, 0.2))),  # the benchmark's goal regions, as offsets from
    ("hard", ((-0.65, 0.35), (-0.55, 0.45))),  # the goal body's rest position
])
def test_pusher_goals_fill_their_region_away_from_the_object(kind, region):
    env = envs.make_env(f"pusher_{kind}")
    q, _ = jax.jit(jax.vmap(env.initial_q_qd))(jax.random.split(jax.random.PRNGKey(0), 2000))
    q = np.asarray(q)
    obj, goal = q[:, [8, 7]], q[:, [10, 9]]  # slide offsets (x, y); the joints are y, then x
    for axis, (low, high) in enumerate(region):
        assert low - 1e-6 <= goal[:, axis].min() < low + 0.05
        assert high - 0.05 < goal[:, axis].max() <= high + 1e-6
    assert np.all(np.linalg.norm(obj - goal, axis=1) >= 0.17 - 1e-5)


def test_the_humanoids_state_is_the_papers_with_its_target_and_no_reset_noise():
    """268 numbers, as in the paper's code: q with the goal marker's x, y (which equal the
    commanded goal's), and every term over the marker's body too; episodes start without noise,
    so two draws differ in their goal only. observe_marker=False gives the robot's own 246."""
    from crl.envs.humanoid import Humanoid

    env = envs.make_env("humanoid")
    assert env.state_size == 268 and envs.make_env("humanoid_u_maze").state_size == 268
    obs = np.asarray(jax.vmap(lambda k: env.reset(k).obs)(jax.random.split(
        jax.random.PRNGKey(0), 2)))
    np.testing.assert_allclose(obs[:, 24:26], obs[:, 268:270], atol=1e-6)
    np.testing.assert_array_equal(obs[0, :24], obs[1, :24])
    assert not np.allclose(obs[0, 268:270], obs[1, 268:270])
    assert Humanoid(observe_marker=False).state_size == 246


def test_the_forward_path_of_a_u_maze_is_its_corridor_and_a_branching_maze_has_none():
    u_maze = load_layout("u_maze")
    assert forward_path(u_maze) == [(1, 1), (1, 2), (1, 3), (2, 3), (3, 3), (3, 2), (3, 1)]
    with pytest.raises(LayoutError, match="not one corridor"):
        forward_path(load_layout("big_maze"))
    starts, goals, probability = forward_pairs(u_maze, (1, 2))
    assert len(starts) == len(goals) == 6 + 5
    assert tuple(starts[0]) == (1, 1) and tuple(goals[0]) == (1, 2)
    assert tuple(starts[-1]) == (3, 3) and tuple(goals[-1]) == (3, 1)
    # Each distance half the mass, spread evenly over its pairs: 1/12 and 1/10.
    np.testing.assert_allclose(probability, [1 / 12] * 6 + [1 / 10] * 5, rtol=1e-6)
    with pytest.raises(LayoutError, match=r"forward distances \(7,\) must be in 1..6"):
        forward_pairs(u_maze, (7,))


def test_a_stitching_task_starts_and_ends_k_cells_apart_each_distance_as_often():
    """ant_u4_maze_gen_1f2f3f, by the paper code's name: 6,000 draws, every start and goal at
    the centres of cells 1, 2 or 3 apart along the corridor, each distance a third of the
    draws (within 4 standard errors)."""
    env = envs.make_env("ant_u4_maze_gen_1f2f3f")
    path = forward_path(env.layout)
    starts, goals = sample_tasks(env, 6000)
    np.testing.assert_allclose(goals, np.round(goals / env.scale) * env.scale, atol=1e-5)
    position = {cell: index for index, cell in enumerate(path)}
    cell = lambda point: tuple(np.floor(point / env.scale + 0.5).astype(int))
    distances = np.array([position[cell(g)] - position[cell(s)] for s, g in zip(starts, goals,
                                                                                strict=True)])
    assert set(distances) == {1, 2, 3}
    for k in (1, 2, 3):
        assert abs(np.mean(distances == k) - 1 / 3) < 4 * np.sqrt(2 / 9 / 6000), k
    assert validate(Config(env="ant_u_maze_gen_3f", eval_env="ant_u_maze_gen_6f")).env
    with pytest.raises(ConfigError, match=r"unknown env 'ant_u9_maze_gen_1f'.*stitching task"):
        validate(Config(env="ant_u9_maze_gen_1f"))


@pytest.mark.parametrize("name", ["ant_u_maze", "point_u_maze"])
def test_maze_goal_noise_spreads_goals_around_the_cell_centres(name):
    """--maze-goal-noise 0.25: goals uniform within a quarter cell of a G cell's centre, the
    same in cells for every maze family; 0 puts them on the centres."""
    for noise in (0.25, 0.0):
        env = envs.make_env(name, maze_goal_noise=noise)
        _, goals = sample_tasks(env, 3000)
        offsets = goals - np.round(goals / env.scale) * env.scale
        assert np.max(np.abs(offsets)) <= noise * env.scale + 1e-5
        if noise:  # uniform: its mean absolute offset is half the bound
            np.testing.assert_allclose(np.mean(np.abs(offsets)), noise * env.scale / 2, rtol=0.05)
    assert validate(Config(env=name, maze_goal_noise=0.1)).maze_goal_noise == 0.1
    with pytest.raises(ConfigError, match=r"maze_goal_noise=0.5 must be in \[0, 0.5\) cells"):
        validate(Config(env=name, maze_goal_noise=0.5))
    with pytest.raises(ConfigError, match="maze_goal_noise: env 'ant' is not a maze"):
        validate(Config(env="ant", maze_goal_noise=0.1))
    refusal = fixed_field_refusal(validate(Config(env=name)),
                                  validate(Config(env=name, maze_goal_noise=0.1)))
    assert "maze_goal_noise None -> 0.1" in refusal


def test_the_ball_of_ant_ball_is_the_papers():
    """Placed as the paper's code places it: at 0.2 of the target plus (cos a, sin b), b the
    target's angle, so its y is 0.4 of the target's and its x within 1 of 0.2 of the target's;
    0.576 kg, on x and y slides only (it cannot leave the floor)."""
    from crl.envs.ant import ANT_Q, AntBall

    env = AntBall()
    keys = jax.random.split(jax.random.PRNGKey(5), 2000)
    q, _ = jax.jit(jax.vmap(env.initial_q_qd))(keys)
    q = np.asarray(q)
    ball, goal = q[:, ANT_Q:ANT_Q + 2], q[:, ANT_Q + 2:ANT_Q + 4]
    np.testing.assert_allclose(np.hypot(*goal.T), 5.0, rtol=1e-5)
    np.testing.assert_allclose(ball[:, 1], 0.4 * goal[:, 1], atol=1e-4)
    offset_x = ball[:, 0] - 0.2 * goal[:, 0]
    assert np.all(np.abs(offset_x) <= 1 + 1e-5) and np.std(offset_x) > 0.6  # cos of U[0, 2pi)
    assert env.sys.q_size() == ANT_Q + 2 + 2  # the ball's x, y and the goal marker's
    ball_link = env.sys.link_names.index("ball")
    np.testing.assert_allclose(float(env.sys.link.inertia.mass[ball_link]), 0.576, rtol=1e-3)


def test_ant_push_is_the_papers():
    """The block of 0.2 g fills the cell between the Ant and both goal cells; the Ant's body is
    8 times Brax's (density 40 for 5); goals (16, 8) or (8, 16) from the start plus U[0, 2]^2;
    the state the Ant's q and qd and the block's (x, y): 31 numbers."""
    from crl.envs.ant import ANT_Q, AntPush

    env = AntPush()
    assert env.state_size == 31 and envs.make_env("ant_ball").state_size == 31
    block = env.sys.link_names.index("block")
    np.testing.assert_allclose(float(env.sys.link.inertia.mass[block]), 2e-4, rtol=1e-3)
    # The torso link: a sphere of radius 0.25 and the four hip capsules (radius 0.08, 0.2 * 2**0.5
    # long) that Brax fuses into it, at density 40.
    capsule = np.pi * 0.08**2 * 0.2 * 2**0.5 + 4 / 3 * np.pi * 0.08**3
    volume = 4 / 3 * np.pi * 0.25**3 + 4 * capsule
    np.testing.assert_allclose(float(env.sys.link.inertia.mass[0]), 40 * volume, rtol=1e-3)
    q, _ = jax.jit(jax.vmap(env.initial_q_qd))(jax.random.split(jax.random.PRNGKey(1), 2000))
    q = np.asarray(q)
    start = np.asarray(env.sample_start_and_goal(jax.random.PRNGKey(0))[0])  # the R cell
    goals = q[:, ANT_Q + 3:ANT_Q + 5] - start
    near = np.where(goals[:, :1] > goals[:, 1:], np.array([16.0, 8.0]), np.array([8.0, 16.0]))
    extra = goals - near
    assert np.all(extra >= -1e-5) and np.all(extra <= 2 + 1e-5)
    np.testing.assert_allclose(np.mean(extra, 0), [1.0, 1.0], atol=0.06)
    assert 0.3 < np.mean(goals[:, 0] > goals[:, 1]) < 0.7  # both goal cells
