"""Maze layouts: parsing, validation and geometry shared by every maze family.

A layout is text, one row per line: ``#`` wall, ``.`` free, ``R`` start, ``G`` a cell that may be
commanded as goal. Row i, column j is centred at world (x, y) = (i * scale, j * scale). Cells
outside the grid count as walls.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from importlib import resources
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

CELL_CHARS = {"#": "wall", ".": "free", "R": "start", "G": "goal"}


class LayoutError(ValueError):
    """A malformed layout; the message names the source, line and column at fault."""


@dataclasses.dataclass(frozen=True)
class MazeLayout:
    rows: tuple[str, ...]

    @property
    def walls(self) -> np.ndarray:
        return np.array([[c == "#" for c in row] for row in self.rows], dtype=bool)

    @property
    def start(self) -> tuple[int, int]:
        return next((i, j) for i, row in enumerate(self.rows) for j, c in enumerate(row)
                    if c == "R")

    @property
    def goals(self) -> tuple[tuple[int, int], ...]:
        return tuple((i, j) for i, row in enumerate(self.rows) for j, c in enumerate(row)
                     if c == "G")

    def wall_boxes(self, scale: float) -> list[tuple[float, float, float, float]]:
        """Walls as few axis-aligned boxes ``(centre_x, centre_y, half_x, half_y)``: each run of
        consecutive wall cells along a row is a rectangle, and a rectangle grows over the next
        rows while they have a run with the same columns (fewer boxes, fewer collision pairs)."""
        open_rects: dict[tuple[int, int], int] = {}  # (first col, last col) -> first row
        rects = []
        for i, row in enumerate([*self.rows, ""]):  # the empty last row closes every rectangle
            runs = {(run.start(), run.end() - 1) for run in re.finditer(r"#+", row)}
            for cols in set(open_rects) - runs:
                rects.append((open_rects.pop(cols), i - 1, *cols))
            for cols in runs - set(open_rects):
                open_rects[cols] = i
        return [((top + bottom) / 2 * scale, (first + last) / 2 * scale,
                 (bottom - top + 1) * scale / 2, (last - first + 1) * scale / 2)
                for top, bottom, first, last in sorted(rects)]


def parse_layout(text: str, source: str = "<layout>") -> MazeLayout:
    """Parse and validate a layout; blank lines and lines starting with ``;`` or ``//`` are
    skipped, surrounding whitespace is ignored."""
    rows: list[str] = []
    origins: list[tuple[int, int]] = []  # (line number, column of the row's first cell)
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith((";", "//")):
            continue
        column = line.index(stripped[0]) + 1
        for offset, char in enumerate(stripped):
            if char not in CELL_CHARS:
                raise LayoutError(
                    f"{source}:{number}:{column + offset}: unknown character {char!r}; valid: "
                    + ", ".join(f"{c!r} ({what})" for c, what in CELL_CHARS.items()))
        if rows and len(stripped) != len(rows[0]):
            raise LayoutError(f"{source}:{number}:{column}: ragged row of {len(stripped)} "
                              f"cells; the first row (line {origins[0][0]}) has {len(rows[0])}")
        rows.append(stripped)
        origins.append((number, column))
    if not rows:
        raise LayoutError(f"{source}: empty layout")
    starts = [(number, column + j) for row, (number, column) in zip(rows, origins, strict=True)
              for j, c in enumerate(row) if c == "R"]
    if not starts:
        raise LayoutError(f"{source}: no start cell 'R'")
    if len(starts) > 1:
        raise LayoutError(f"{source}:{starts[1][0]}:{starts[1][1]}: a second start cell 'R' "
                          f"(the first is at {starts[0][0]}:{starts[0][1]})")
    if not any("G" in row for row in rows):
        raise LayoutError(f"{source}: no goal cell 'G'")
    layout = MazeLayout(tuple(rows))
    reachable = reachable_cells(layout)
    for i, j in layout.goals:
        if (i, j) not in reachable:
            number, column = origins[i]
            raise LayoutError(f"{source}:{number}:{column + j}: goal cell 'G' cannot be reached "
                              f"from the start (walls and the grid's edge enclose it)")
    return layout


def _packaged_sections() -> dict[str, str]:
    text = resources.files("crl.envs").joinpath("mazes.txt").read_text()
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("#") and current is None:
            continue  # header comments before the first section
        match = re.fullmatch(r"\[(\w+)\]", line.strip())
        if match:
            current = sections.setdefault(match.group(1), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines) for name, lines in sections.items()}


LAYOUT_NAMES: tuple[str, ...] = tuple(_packaged_sections())


def load_layout(spec: str) -> MazeLayout:
    """A layout by packaged name (``u_maze``), file path, or the rows themselves separated by
    newlines or ``/`` (``"#####/#RGG#/###G#/#GGG#/#####"``)."""
    sections = _packaged_sections()
    if spec in sections:
        return parse_layout(sections[spec], f"mazes.txt[{spec}]")
    if "\n" in spec:
        return parse_layout(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        return parse_layout(path.read_text(), str(path))
    if "/" in spec and "#" in spec:  # rows, not a path
        return parse_layout(spec.replace("/", "\n"))
    raise LayoutError(f"no maze layout {spec!r}: not a file, not rows separated by '/', and not "
                      f"one of {', '.join(sections)}")


def corridor_steps(layout: MazeLayout,
                   origin: tuple[int, int] | None = None) -> dict[tuple[int, int], int]:
    """Steps from ``origin`` (default: the start) to every cell reachable from it, moving
    between side-by-side non-wall cells (a breadth-first search)."""
    walls = layout.walls
    origin = layout.start if origin is None else origin
    steps = {origin: 0}
    frontier = collections.deque([origin])
    while frontier:
        i, j = frontier.popleft()
        for cell in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
            inside = 0 <= cell[0] < walls.shape[0] and 0 <= cell[1] < walls.shape[1]
            if inside and not walls[cell] and cell not in steps:
                steps[cell] = steps[i, j] + 1
                frontier.append(cell)
    return steps


def reachable_cells(layout: MazeLayout) -> set[tuple[int, int]]:
    """The non-wall cells connected to the start through side-by-side non-wall cells."""
    return set(corridor_steps(layout))


def forward_path(layout: MazeLayout) -> list[tuple[int, int]]:
    """The cells of a one-corridor maze (the U mazes) from the start to its far end, in order;
    a LayoutError for a maze with branches, where "forward" has no single meaning."""
    steps = corridor_steps(layout)
    path = sorted(steps, key=steps.get)
    if [steps[cell] for cell in path] != list(range(len(path))):
        raise LayoutError(f"the maze {'/'.join(layout.rows)} is not one corridor from its start: "
                          "forward start-goal pairs need one (a U maze)")
    return path


def forward_pairs(layout: MazeLayout,
                  distances: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The stitching tasks of the paper's code (its ``ant_maze_generalization``): a start
    cell and the cell ``k`` further along the corridor, for each ``k`` of ``distances``, each
    distance equally likely and its pairs uniformly so. Returns start cells ``[P, 2]``, goal
    cells ``[P, 2]`` and the probability of each pair ``[P]``."""
    path = forward_path(layout)
    if not distances or any(k < 1 or k >= len(path) for k in distances):
        raise LayoutError(f"forward distances {distances} must be in 1..{len(path) - 1} (the "
                          f"corridor has {len(path)} cells)")
    starts, goals, weights = [], [], []
    for k in distances:
        for i in range(len(path) - k):
            starts.append(path[i])
            goals.append(path[i + k])
            weights.append(1 / (len(distances) * (len(path) - k)))
    return np.asarray(starts), np.asarray(goals), np.asarray(weights, np.float32)


def cell_centres(cells: tuple[tuple[int, int], ...], scale: float) -> np.ndarray:
    """World (x, y) of the centres of ``cells``: ``[len(cells), 2]``."""
    return np.asarray(cells, np.float32).reshape(-1, 2) * scale


def uniform_around(key: jax.Array, centre: jax.Array, noise: float) -> jax.Array:
    """``centre`` (x, y) plus uniform noise in [-noise, noise]^2."""
    return centre + jax.random.uniform(key, (2,), minval=-noise, maxval=noise)


def sample_goal(key: jax.Array, centres: jax.Array, noise: float) -> jax.Array:
    """A uniformly chosen goal cell's centre plus uniform noise in [-noise, noise]^2."""
    cell_key, noise_key = jax.random.split(key)
    cell = jax.random.randint(cell_key, (), 0, centres.shape[0])
    return uniform_around(noise_key, centres[cell], noise)


class MazeArena:
    """Mixin that puts a Brax robot task (Ant, Humanoid, ...) in a maze: the layout's walls,
    the start in the ``R`` cell, and the goal at the centre of a ``G`` cell (the paper's
    goals), plus uniform noise of ``goal_noise`` cells either way if asked for. With
    ``forward_distances`` (a one-corridor maze), the start and goal are instead a pair of
    cells that many cells apart along the corridor (``forward_pairs``).

    ``class AntMaze(MazeArena, Ant)``: the robot class takes ``walls`` and
    ``wall_half_height`` and calls ``sample_start_and_goal`` in its reset.
    """

    default_scale: float

    def __init__(self, layout: str, scale: float | None = None, goal_noise: float = 0.0,
                 forward_distances: tuple[int, ...] = (), **kwargs):
        self.layout = load_layout(layout)
        self.scale = scale or self.default_scale
        self.goal_noise = goal_noise * self.scale
        self._start = cell_centres((self.layout.start,), self.scale)[0]
        self._goals = cell_centres(self.layout.goals, self.scale)
        self.forward_distances = tuple(forward_distances)
        if self.forward_distances:
            starts, goals, self._pair_probability = forward_pairs(self.layout,
                                                                  self.forward_distances)
            self._pair_starts = starts.astype(np.float32) * self.scale
            self._pair_goals = goals.astype(np.float32) * self.scale
        super().__init__(walls=self.layout.wall_boxes(self.scale),
                         wall_half_height=0.25 * self.scale, **kwargs)

    def sample_start_and_goal(self, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        if self.forward_distances:
            pair_key, noise_key = jax.random.split(rng)
            pair = jax.random.choice(pair_key, len(self._pair_probability),
                                     p=jnp.asarray(self._pair_probability))
            return jnp.asarray(self._pair_starts)[pair], uniform_around(
                noise_key, jnp.asarray(self._pair_goals)[pair], self.goal_noise)
        return jnp.asarray(self._start), sample_goal(rng, jnp.asarray(self._goals),
                                                     self.goal_noise)
