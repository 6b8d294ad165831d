"""crl.viz on the tiny run (tests/tiny.py, point_u_maze): Q-value maps against a direct
computation through the networks, walls masked, goals checked, one colour scale side by side,
learning curves from metrics.jsonl."""

import re

import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib.image import imread

from crl import viz
from crl.envs.maze import load_layout
from crl.losses import energy_pairs

POINTS_PER_CELL = 4
BEST_OF = 8


@pytest.fixture(scope="module")
def maze_run(tiny_run):
    return viz.load_maze_run(tiny_run[3])


@pytest.fixture(scope="module")
def q_map(maze_run):
    return viz.q_value_map(*maze_run, points_per_cell=POINTS_PER_CELL)


@pytest.fixture(scope="module")
def best_q_map(maze_run):
    return viz.q_value_map(*maze_run, points_per_cell=POINTS_PER_CELL, best_of=BEST_OF)


def test_the_grid_covers_every_free_cell_and_masks_every_wall_cell(q_map):
    walls = q_map.layout.walls
    assert q_map.q.shape == (len(q_map.x), len(q_map.y))
    assert q_map.q.shape == (walls.shape[0] * POINTS_PER_CELL, walls.shape[1] * POINTS_PER_CELL)
    in_wall = walls.repeat(POINTS_PER_CELL, 0).repeat(POINTS_PER_CELL, 1)
    for values in (q_map.q, q_map.distance):
        assert np.isnan(values[in_wall]).all()
        assert np.isfinite(values[~in_wall]).all()
    for coordinates in (q_map.x, q_map.y):  # point k lies strictly inside cell k // POINTS
        cells = np.arange(len(coordinates)) // POINTS_PER_CELL
        offsets = coordinates / q_map.scale - cells
        assert np.all(np.abs(offsets) < 0.5)


def test_the_default_goal_is_across_the_wall_from_the_start_and_far_along_the_corridors(q_map):
    assert q_map.goal_cell == (3, 1) and q_map.goal == (12.0, 4.0)  # u_maze, scale 4
    assert viz.farthest_goal_cell(load_layout("u4_maze")) == (4, 1)


def test_q_at_a_point_is_the_critic_of_the_deterministic_action_there(maze_run, q_map):
    config, _, params = maze_run[1]
    networks = maze_run[1].networks
    free_points = np.argwhere(np.isfinite(q_map.q))
    rows, cols = free_points[[0, len(free_points) // 2, -1]].T
    states = jnp.stack([q_map.x[rows], q_map.y[cols]], -1)  # the point maze's state is (x, y)
    goals = jnp.broadcast_to(jnp.asarray(q_map.goal), states.shape)
    mean, _ = networks.policy(params["actor"], states, goals)
    phi = networks.encode_state_action(params["critic"], states, jnp.tanh(mean))
    psi = networks.encode_goal(params["critic"], goals)
    np.testing.assert_allclose(q_map.q[rows, cols], energy_pairs(config.energy, phi, psi),
                               rtol=1e-5)
    np.testing.assert_allclose(q_map.distance[rows, cols], jnp.linalg.norm(phi - psi, axis=-1),
                               rtol=1e-5)


def test_best_of_k_is_at_least_the_deterministic_q_everywhere_and_better_somewhere(q_map,
                                                                                   best_q_map):
    free = np.isfinite(q_map.q)
    assert np.array_equal(free, np.isfinite(best_q_map.q))
    assert np.all(best_q_map.q[free] >= q_map.q[free] - 1e-5)
    assert np.any(best_q_map.q[free] > q_map.q[free] + 1e-4)


@pytest.mark.parametrize(("goal", "message"), [
    ({"goal_cell": (2, 1)}, "goal cell (2, 1) is a wall of the 5 x 5 maze grid"),
    ({"goal_cell": (5, 1)}, "goal cell (5, 1) is outside the 5 x 5 maze grid"),
    ({"goal_cell": (1, -1)}, "goal cell (1, -1) is outside the 5 x 5 maze grid"),
    ({"goal_xy": (8.0, 5.0)}, "goal (x, y) = (8.0, 5.0), in cell (2, 1), is a wall of the 5 x 5"),
    ({"goal_cell": (1, 2), "goal_xy": (4.0, 8.0)}, "not both"),
])
def test_a_goal_in_a_wall_or_off_the_grid_is_refused_in_one_line(maze_run, goal, message):
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        viz.q_value_map(*maze_run, **goal)
    assert "\n" not in str(error.value)


def test_a_goal_in_world_coordinates_is_kept_as_given():
    from crl.envs import make_env

    env = make_env("point_u_maze")
    assert viz.resolve_goal(env, goal_xy=(13.0, 3.0)) == ((3, 1), (13.0, 3.0))
    assert viz.resolve_goal(env, goal_cell=[1, 3]) == ((1, 3), (4.0, 12.0))


def test_an_env_without_a_maze_is_refused(maze_run):
    from crl.envs import make_env

    with pytest.raises(ValueError, match="Reacher is not a maze env"):
        viz.q_value_map(make_env("reacher"), maze_run[1])


def test_the_q_figure_draws_walls_start_goal_and_labelled_colour_bars(q_map, tmp_path):
    figure = viz.plot_q_values(q_map)
    panels = [ax for ax in figure.axes if ax.images]
    assert len(panels) == 2
    for ax in panels:
        assert len(ax.patches) == q_map.layout.walls.sum()
        assert len(ax.lines) == 2  # start and goal
    assert {viz.DISTANCE_LABEL, q_map.q_label} <= {ax.get_ylabel() for ax in figure.axes}
    image = imread(viz.save_figure(figure, tmp_path / "new" / "q.png"))[..., :3]
    # Two colour-mapped panels: many colours, and much of the figure is not background.
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 64
    assert np.mean(np.any(image < 0.9, axis=-1)) > 0.2


def test_runs_side_by_side_share_one_colour_scale_and_are_titled_by_depth(q_map, best_q_map,
                                                                           maze_run):
    assert np.nanmax(q_map.q) != np.nanmax(best_q_map.q)  # so that sharing is not a given
    figure = viz.compare_q_values([q_map, best_q_map])
    panels = [ax for ax in figure.axes if ax.images]
    both = np.concatenate([q_map.q, best_q_map.q])
    assert [ax.images[0].get_clim() for ax in panels] == [(np.nanmin(both), np.nanmax(both))] * 2
    assert [ax.get_title() for ax in panels] == ["depth 4", f"depth 4, best of {BEST_OF} samples"]
    other_goal = viz.q_value_map(*maze_run, goal_cell=(1, 3), points_per_cell=POINTS_PER_CELL)
    with pytest.raises(ValueError, match="compare runs for one goal"):
        viz.compare_q_values([q_map, other_goal])


def test_learning_curves_draw_each_metric_against_env_steps_one_line_per_run(tiny_run,
                                                                              tmp_path):
    from crl import runs

    path = tiny_run[3]
    other = tmp_path / "other_run"
    other.mkdir()
    history = runs.read_metrics(path)
    runs.write_metrics(other, [{**line, "eval/success": 1.0} for line in history])
    figure = viz.plot_learning_curves([path, other])
    assert [ax.get_title() for ax in figure.axes] == list(viz.DEFAULT_CURVES)
    success, _, critic_loss = figure.axes
    assert [line.get_label() for line in success.lines] == [path.name, "other_run"]
    assert list(success.lines[1].get_ydata()) == [1.0] * len(history)
    trained = [line for line in history if "train/critic_loss" in line]  # not epoch 0
    assert list(critic_loss.lines[0].get_xdata()) == [line["env_steps"] for line in trained]
    with pytest.raises(ValueError, match=re.escape("no run logged eval/sucess; logged: ")):
        viz.plot_learning_curves([path], ["eval/sucess"])


def synthetic_map(values_of_cell) -> viz.QValueMap:
    """A QValueMap of u4_maze whose Q in each free cell is ``values_of_cell((i, j))``."""
    layout, n = load_layout("u4_maze"), 2
    q = np.full((layout.walls.shape[0] * n, layout.walls.shape[1] * n), np.nan)
    for i, j in zip(*np.nonzero(~layout.walls), strict=True):
        q[i * n:(i + 1) * n, j * n:(j + 1) * n] = values_of_cell((i, j))
    return viz.QValueMap(q=q, distance=-q, x=np.arange(q.shape[0]), y=np.arange(q.shape[1]),
                         goal_cell=(4, 1), goal=(16.0, 4.0), layout=layout, scale=4.0,
                         best_of=0, label="synthetic")


def test_corridor_agreement_tells_a_corridor_critic_from_a_straight_line_one():
    from crl.envs.maze import corridor_steps

    steps = corridor_steps(load_layout("u4_maze"), (4, 1))
    assert steps[(2, 1)] == 10 and steps[(5, 1)] == 1  # the start is 10 steps round the wall
    corridor = viz.corridor_agreement(synthetic_map(lambda cell: -steps[cell]))
    straight = viz.corridor_agreement(synthetic_map(lambda cell: -np.hypot(cell[0] - 4,
                                                                           cell[1] - 1)))
    assert corridor["corridor"] == pytest.approx(1.0)
    assert straight["straight_line"] == pytest.approx(1.0)
    assert corridor["straight_line"] < 0.8 and straight["corridor"] < 0.8
