"""Pictures of what a run has learned, for notebooks (notebooks/q_values.ipynb,
notebooks/training_curves.ipynb).

The paper's Figure 9: in the U4 maze a depth-4 critic's Q-values fall off with straight-line
distance to the goal, straight through a wall, while a depth-64 critic's follow the corridors.
``q_value_map`` evaluates a run's critic over a grid of agent positions covering the maze's free
cells, ``plot_q_values`` draws it, ``compare_q_values`` draws several runs on one colour scale.
``plot_learning_curves`` draws runs' metrics.jsonl; ``plot_block_health`` and
``plot_representation_rank`` its per-block diagnostics (notebooks/depth_health.ipynb). Figures
are ``matplotlib.figure.Figure`` objects, free of pyplot's global state, so they render on a
headless machine.

Pictures follow crl.render's top view of a maze: world y across, world x down (rows of
mazes.txt run down the picture).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.ticker import MaxNLocator

from crl.agents.base import Agent, Params
from crl.config import Config
from crl.diagnostics import PREFIX as DIAG
from crl.envs.base import GoalEnv
from crl.envs.maze import MazeLayout, corridor_steps
from crl.evaluate import LoadedRun, open_run
from crl.render import draw_walls
from crl.runs import agent_label, read_metrics

Cell = tuple[int, int]

DEFAULT_CURVES = ("eval/success", "eval/success_any", "train/critic_loss")
DISTANCE_LABEL = "‖φ(s, a) - ψ(g)‖"


@dataclasses.dataclass(frozen=True)
class QValueMap:
    """A critic's values over a maze for one goal. Grid point (r, c) puts the agent at world
    (x[r], y[c]); points in wall cells are NaN."""

    q: np.ndarray  # [len(x), len(y)]
    distance: np.ndarray  # ‖φ(s, a) - ψ(g)‖ for the action a whose Q is in ``q``
    x: np.ndarray
    y: np.ndarray
    goal_cell: Cell
    goal: tuple[float, float]  # world (x, y)
    layout: MazeLayout
    scale: float
    best_of: int
    label: str  # what tells the run apart in a comparison, e.g. "depth 64"

    @property
    def q_label(self) -> str:
        if self.best_of == 0:
            return "Q(s, π(s, g), g)"
        return f"best Q(s, a, g) of π's mean and {self.best_of} samples a ~ π"

    @property
    def title(self) -> str:
        return self.label + (f", best of {self.best_of} samples" if self.best_of else "")


def depth_label(config: Config) -> str:
    """The run's depth, the knob Figure 9 turns (and its agent, when it is not crl)."""
    actor, critic = config.actor_depth or config.depth, config.critic_depth or config.depth
    depth = (f"depth {critic}" if actor == critic
             else f"actor depth {actor}, critic depth {critic}")
    return depth if config.agent == "crl" else f"{agent_label(config)}, {depth}"


def load_maze_run(path: str | Path, epoch: int | None = None) -> tuple[GoalEnv, LoadedRun]:
    """A run as ``crl.load_run`` gives it, with its evaluation env: the maze to draw it over,
    built exactly as the run's evaluation built it."""
    trainer, params, _ = open_run(Path(path), epoch=epoch, devices=jax.devices()[:1])
    return trainer.eval_env.unwrapped, LoadedRun(trainer.config, trainer.agent, params)


def farthest_goal_cell(layout: MazeLayout) -> Cell:
    """The default goal: the ``G`` cell farthest from the start along the corridors. In the
    U-mazes it is the cell just across the wall from the start (cell (4, 1) of u4_maze, (3, 1)
    of u_maze), near in a straight line and far by the corridors: the goal for which a critic
    that measures straight-line distance and one that learned the corridors disagree most."""
    steps = corridor_steps(layout)
    return max(layout.goals, key=lambda cell: steps[cell])


def _check_free(layout: MazeLayout, cell: Cell, what: str) -> None:
    rows, cols = layout.walls.shape
    if not (0 <= cell[0] < rows and 0 <= cell[1] < cols):
        raise ValueError(f"{what} is outside the {rows} x {cols} maze grid (rows 0-{rows - 1}, "
                         f"columns 0-{cols - 1})")
    if layout.walls[cell]:
        raise ValueError(f"{what} is a wall of the {rows} x {cols} maze grid")


def resolve_goal(env: GoalEnv, goal_cell: Sequence[int] | None = None,
                 goal_xy: Sequence[float] | None = None) -> tuple[Cell, tuple[float, float]]:
    """The goal's cell and world (x, y), from either; a goal in a wall or off the grid, or an
    env without a maze, is refused in one line."""
    layout = getattr(env, "layout", None)
    if layout is None:
        raise ValueError(f"{type(env).__name__} is not a maze env (it has no layout): Q-value "
                         "maps need a maze, e.g. point_u4_maze or ant_u4_maze")
    if goal_cell is not None and goal_xy is not None:
        raise ValueError(f"give the goal as a cell or as world (x, y), not both: goal_cell "
                         f"{goal_cell}, goal_xy {goal_xy}")
    if goal_xy is not None:
        xy = (float(goal_xy[0]), float(goal_xy[1]))
        cell = (int(np.floor(xy[0] / env.scale + 0.5)), int(np.floor(xy[1] / env.scale + 0.5)))
        _check_free(layout, cell, f"goal (x, y) = {xy}, in cell {cell},")
        return cell, xy
    cell = farthest_goal_cell(layout) if goal_cell is None else (int(goal_cell[0]),
                                                                 int(goal_cell[1]))
    _check_free(layout, cell, f"goal cell {cell}")
    return cell, (cell[0] * env.scale, cell[1] * env.scale)


# Agents are static and compare by configuration: runs of one configuration share a compilation.
@functools.partial(jax.jit, static_argnames=("agent", "best_of"))
def _best_q_and_distance(agent: Agent, best_of: int, params: Params, states: jax.Array,
                         goal: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    goals = jnp.broadcast_to(goal, (states.shape[0], goal.shape[0]))
    sampled = jax.vmap(lambda k: agent.act(params, states, goals, k))(
        jax.random.split(key, best_of))
    # [1 + best_of, points, action]: the deterministic action first.
    actions = jnp.concatenate([agent.act(params, states, goals, None)[None], sampled])
    action, q = agent.best_action(params, states, goals, actions)
    # Only a contrastive critic has representations; the others' maps show Q alone.
    distance = (agent.representation_distance(params, states, action, goals)
                if hasattr(agent, "representation_distance") else jnp.full_like(q, jnp.nan))
    return q, distance


def q_value_map(env: GoalEnv, run: LoadedRun, goal_cell: Sequence[int] | None = None,
                goal_xy: Sequence[float] | None = None, points_per_cell: int = 8,
                best_of: int = 0, seed: int = 0) -> QValueMap:
    """Q(s, π(s, g), g) for the agent at every grid point of the maze, π the deterministic
    action tanh(mean) (with ``best_of=K``: the best of it and K actions sampled from π).

    The goal is a cell (row, col) of the layout or a world (x, y); by default
    ``farthest_goal_cell``. The state is the env's reset state (drawn with ``seed``) with its x, y
    (``state[goal_indices[:2]]``) moved to each point, the rest (an Ant's joints) left as reset:
    no physics runs. The grid has ``points_per_cell`` x ``points_per_cell`` points per cell, at
    the centres of equal sub-cells, so no point lies on a cell border."""
    if not run.agent.has_critic:
        raise ValueError(f"agent {run.config.agent!r} has no critic: Q-value maps need one "
                         "(crl, sac or td3)")
    if points_per_cell < 1 or best_of < 0:
        raise ValueError(f"points_per_cell={points_per_cell} must be at least 1 and "
                         f"best_of={best_of} at least 0")
    goal_cell, goal = resolve_goal(env, goal_cell, goal_xy)
    layout, scale = env.layout, env.scale
    rows, cols = layout.walls.shape

    def axis(cells: int) -> np.ndarray:
        return ((np.arange(cells * points_per_cell) + 0.5) / points_per_cell - 0.5) * scale

    x, y = axis(rows), axis(cols)
    free = ~layout.walls.repeat(points_per_cell, 0).repeat(points_per_cell, 1)
    point_rows, point_cols = np.nonzero(free)
    reset_key, sample_key = jax.random.split(jax.random.PRNGKey(seed))
    reset_obs = np.asarray(env.reset(reset_key).obs, np.float32)
    states = np.tile(reset_obs[:env.state_size], (point_rows.size, 1))
    x_index, y_index = env.goal_indices[:2]
    states[:, x_index], states[:, y_index] = x[point_rows], y[point_cols]
    goal_vector = reset_obs[env.state_size:].copy()  # a Humanoid's goal height stays as reset
    goal_vector[:2] = goal
    q_free, distance_free = jax.device_get(_best_q_and_distance(
        run.agent, best_of, run.params, jnp.asarray(states),
        jnp.asarray(goal_vector), sample_key))
    q, distance = np.full(free.shape, np.nan), np.full(free.shape, np.nan)
    q[free], distance[free] = q_free, distance_free
    return QValueMap(q=q, distance=distance, x=x, y=y, goal_cell=goal_cell, goal=goal,
                     layout=layout, scale=scale, best_of=best_of, label=depth_label(run.config))


def corridor_agreement(q_map: QValueMap) -> dict[str, float]:
    """Does the critic follow the corridors? Spearman rank correlations, over the free cells
    reachable from the goal, of each cell's mean Q with minus its distance to the goal cell
    along the corridors (``corridor``) and with minus its straight-line distance
    (``straight_line``). A critic that learned the maze ranks cells by the first; one that
    measures distance through walls, by the second."""
    from scipy import stats

    steps = corridor_steps(q_map.layout, q_map.goal_cell)
    cells = sorted(steps)
    n = q_map.q.shape[0] // q_map.layout.walls.shape[0]  # grid points per cell side
    q = [np.nanmean(q_map.q[i * n:(i + 1) * n, j * n:(j + 1) * n]) for i, j in cells]
    straight = [np.hypot(i - q_map.goal_cell[0], j - q_map.goal_cell[1]) for i, j in cells]
    return {"corridor": float(stats.spearmanr(q, [-steps[c] for c in cells])[0]),
            "straight_line": float(stats.spearmanr(q, -np.asarray(straight))[0])}


def _draw_map(ax: Axes, q_map: QValueMap, values: np.ndarray, cmap: str,
              vmin: float | None = None, vmax: float | None = None) -> AxesImage:
    rows, cols = q_map.layout.walls.shape
    half = q_map.scale / 2
    # (left, right, bottom, top): the first row at the top, so x grows downward as in crl.render.
    extent = (-half, cols * q_map.scale - half, rows * q_map.scale - half, -half)
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, origin="upper", extent=extent,
                      interpolation="nearest")
    draw_walls(ax, q_map.layout, q_map.scale)
    start_x, start_y = np.asarray(q_map.layout.start) * q_map.scale
    ax.plot(start_y, start_x, "o", ms=11, mfc="white", mec="black", label="start (R)")
    ax.plot(q_map.goal[1], q_map.goal[0], "*", ms=18, mfc="red", mec="black", label="goal")
    ax.set_xlabel("world y")
    ax.set_ylabel("world x")
    return image


def plot_q_values(q_map: QValueMap) -> Figure:
    """Q over the maze next to the representation distance behind it: with the L2 energy they
    are one picture, with dot or cosine energies they can disagree. A critic without
    representations (SAC's, TD3's) gets the Q panel alone."""
    if np.isnan(q_map.distance).all():
        figure = Figure(figsize=(5.5, 5), layout="constrained")
        q_ax = figure.subplots()
        figure.colorbar(_draw_map(q_ax, q_map, q_map.q, "viridis"), ax=q_ax,
                        label=q_map.q_label)
        q_ax.legend(loc="lower right", fontsize="small")
        q_ax.set_title(f"{q_map.title}: Q-value, goal cell {q_map.goal_cell}")
        return figure
    figure = Figure(figsize=(11, 5), layout="constrained")
    q_ax, distance_ax = figure.subplots(1, 2)
    figure.colorbar(_draw_map(q_ax, q_map, q_map.q, "viridis"), ax=q_ax, label=q_map.q_label)
    # Reversed so that near the goal (small distance, high Q) is bright in both panels.
    figure.colorbar(_draw_map(distance_ax, q_map, q_map.distance, "viridis_r"), ax=distance_ax,
                    label=DISTANCE_LABEL)
    q_ax.legend(loc="lower right", fontsize="small")
    q_ax.set_title("Q-value")
    distance_ax.set_title("representation distance")
    figure.suptitle(f"{q_map.title}: goal cell {q_map.goal_cell}")
    return figure


def compare_q_values(q_maps: Sequence[QValueMap]) -> Figure:
    """Runs side by side on one colour scale, so that equal colours are equal Q-values."""
    goals = {q_map.goal for q_map in q_maps}
    if len(goals) != 1:
        raise ValueError(f"compare runs for one goal; these maps have goals {sorted(goals)}")
    values = np.concatenate([q_map.q[np.isfinite(q_map.q)] for q_map in q_maps])
    vmin, vmax = float(values.min()), float(values.max())
    figure = Figure(figsize=(4.5 * len(q_maps) + 1.5, 5), layout="constrained")
    axes = figure.subplots(1, len(q_maps), squeeze=False)[0]
    for ax, q_map in zip(axes, q_maps, strict=True):
        image = _draw_map(ax, q_map, q_map.q, "viridis", vmin, vmax)
        ax.set_title(q_map.title)
    q_labels = {q_map.q_label for q_map in q_maps}
    figure.colorbar(image, ax=list(axes), label=q_labels.pop() if len(q_labels) == 1
                    else "Q(s, a, g)")
    figure.suptitle(f"goal cell {q_maps[0].goal_cell}")
    return figure


def plot_learning_curves(run_dirs: Sequence[str | Path],
                         metrics: Sequence[str] = DEFAULT_CURVES) -> Figure:
    """One panel per metric of metrics.jsonl against env steps, one line per run."""
    histories = [read_metrics(Path(run_dir)) for run_dir in run_dirs]
    logged = {name for history in histories for line in history for name in line}
    missing = [name for name in metrics if name not in logged]
    if missing:
        raise ValueError(f"no run logged {', '.join(missing)}; logged: {', '.join(sorted(logged))}")
    # Epoch 0 (the initial policy) is evaluated, not trained: it has no train/ metrics.
    return _metric_panels(run_dirs, histories, metrics, "env_steps", "env steps", metrics,
                          size=(4.5, 4))


def _metric_panels(run_dirs: Sequence[str | Path], histories: list[list[dict[str, Any]]],
                   names: Sequence[str], x: str, x_label: str, titles: Sequence[str],
                   size: tuple[float, float], y_label: str | None = None) -> Figure:
    """One panel per metric against the field ``x`` of each line that has it, one line per
    run."""
    figure = Figure(figsize=(size[0] * len(names), size[1]), layout="constrained")
    axes = figure.subplots(1, len(names), squeeze=False)[0]
    for index, (run_dir, history) in enumerate(zip(run_dirs, histories, strict=True)):
        for ax, name in zip(axes, names, strict=True):
            points = [(line[x], line[name]) for line in history if name in line]
            if points:
                ax.plot(*zip(*points, strict=True), marker=".", color=f"C{index}",
                        label=Path(run_dir).name)
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel(x_label)
        if y_label:
            ax.set_ylabel(y_label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    return figure


BLOCK_QUANTITIES = ("activation_rms", "dormant_fraction", "grad_norm", "update_ratio")
# Quantities that span orders of magnitude over depth and training are coloured on a log scale.
_LOG_SCALED = ("grad_norm", "update_ratio")


def diagnosed_networks(history: list[dict[str, Any]]) -> list[str]:
    """The networks whose per-block health a run logged (``critic/sa_encoder``, ...)."""
    suffix = "/activation_rms"
    return sorted({name[len(DIAG):-len(suffix)] for line in history for name in line
                   if name.startswith(DIAG) and name.endswith(suffix)})


def block_history(history: list[dict[str, Any]], network: str,
                  quantity: str) -> tuple[np.ndarray, np.ndarray]:
    """Epochs ``[E]`` and a per-block quantity ``[E, blocks]`` of one network of a run."""
    name = f"{DIAG}{network}/{quantity}"
    lines = [line for line in history if name in line]
    if not lines:
        raise ValueError(f"the run logged no {name} (trained with --no-diagnostics, or before "
                         f"diagnostics existed); networks with diagnostics: "
                         f"{', '.join(diagnosed_networks(history)) or 'none'}")
    return (np.array([line["epoch"] for line in lines]),
            np.array([line[name] for line in lines], dtype=float))


def _default_network(history: list[dict[str, Any]]) -> str:
    networks = diagnosed_networks(history)
    if not networks:
        raise ValueError("the run logged no diagnostics (diag/...): train without "
                         "--no-diagnostics")
    critics = [name for name in networks if name.startswith("critic")]
    return (critics or networks)[-1]


def plot_block_health(run_dirs: Sequence[str | Path], network: str | None = None,
                      quantities: Sequence[str] = BLOCK_QUANTITIES) -> Figure:
    """A heatmap of block (up: the first block) against epoch per quantity (columns), one row
    per run, on one colour scale per quantity. ``network``: its path in the parameters
    (``actor``, ``critic/sa_encoder``, ...); default the critic's state-action network (or the
    run's only network)."""
    histories = [read_metrics(Path(run_dir)) for run_dir in run_dirs]
    network = network or _default_network(histories[0])
    data = [[block_history(history, network, quantity) for quantity in quantities]
            for history in histories]
    figure = Figure(figsize=(3.6 * len(quantities), 2.6 * len(run_dirs) + 0.6),
                    layout="constrained")
    axes = figure.subplots(len(run_dirs), len(quantities), squeeze=False)
    for column, quantity in enumerate(quantities):
        values = np.concatenate([row[column][1].ravel() for row in data])
        values = values[np.isfinite(values)]
        if quantity in _LOG_SCALED and np.any(values > 0):
            positive = values[values > 0]
            norm = LogNorm(positive.min(), max(positive.max(), positive.min() * 1.01))
        elif quantity == "dormant_fraction":
            norm = Normalize(0, 1)
        else:
            norm = Normalize(values.min(), max(values.max(), values.min() + 1e-9))
        for row, run_dir in enumerate(run_dirs):
            epochs, blocks = data[row][column]
            ax = axes[row, column]
            image = ax.imshow(blocks.T, aspect="auto", origin="upper", norm=norm,
                              cmap="viridis", interpolation="nearest",
                              extent=(epochs[0] - 0.5, epochs[-1] + 0.5, blocks.shape[1] - 0.5,
                                      -0.5))
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(f"{Path(run_dir).name}\nblock" if column == 0 else "block")
            if row == 0:
                ax.set_title(quantity)
        figure.colorbar(image, ax=axes[:, column].tolist(), shrink=0.9)
    figure.suptitle(f"per-block health of {network}")
    return figure


def plot_representation_rank(run_dirs: Sequence[str | Path]) -> Figure:
    """The effective rank over the batch of every representation a run logged (phi, psi and
    each network's last features) against epoch, one panel each, one line per run."""
    histories = [read_metrics(Path(run_dir)) for run_dir in run_dirs]
    names = sorted({name for history in histories for line in history for name in line
                    if name.startswith(DIAG) and name.endswith(("/effective_rank",
                                                                "/feature_rank"))})
    if not names:
        raise ValueError("the runs logged no representation rank (diag/.../effective_rank): "
                         "train without --no-diagnostics")
    return _metric_panels(run_dirs, histories, names, "epoch", "epoch",
                          [name[len(DIAG):] for name in names], size=(4, 3.4),
                          y_label="effective rank")


def save_figure(figure: Figure, file: str | Path) -> Path:
    """Save as the file's suffix says (PNG, PDF, SVG), making its directory."""
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(file, dpi=100, bbox_inches="tight")
    return file
