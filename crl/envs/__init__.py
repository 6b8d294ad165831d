"""Registry of goal-conditioned environments by name.

Looking a name up imports nothing heavy: an entry names its class by module path and is built
on demand, so bad names are rejected before JAX or Brax is imported.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import re
import warnings
from typing import Any

# Brax warns, at every env it builds, that it is no longer maintained: noise in every run's log.
warnings.filterwarnings("ignore", message="Brax System, piplines", category=UserWarning)

BACKENDS = ("spring", "positional", "generalized", "mjx")
# What an env's episode restarts from after it ends (crl/envs/wrappers.py): its first start and
# goal again (the paper's code, through Brax's AutoResetWrapper), or a fresh draw of both.
RESET_MODES = ("first_state", "resample")
MAZE_LAYOUTS = ("u_maze", "u_maze_eval", "u4_maze", "u4_maze_eval", "u5_maze", "u5_maze_eval",
                "big_maze", "big_maze_eval", "hardest_maze")
# The paper code's other U mazes, which only its Ant runs (ant_u2_maze, ...); the stitching tasks
# run on their corridors too.
ANT_LAYOUTS = ("u2_maze", "u2_maze_eval", "u3_maze", "u3_maze_eval", "u6_maze", "u6_maze_eval",
               "u7_maze", "u7_maze_eval")
# Packaged layouts (crl/envs/mazes.txt) besides those every maze family has: the Humanoid's own
# Big Maze for evaluation, and the Ant's.
OWN_LAYOUTS = ("humanoid_big_maze_eval", *ANT_LAYOUTS)
# The stitching tasks of the paper's code, by its names: ant_<layout>_gen_<k>f[<k>f...] starts
# and ends each episode k cells apart along a one-corridor maze (crl.envs.maze.forward_pairs).
STITCHING = re.compile(r"ant_(?P<layout>[a-z0-9]+_maze)_gen_(?P<distances>(?:[0-9]+f)+)")


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """How to build an env and how it is scored."""

    cls: str  # "module:Class"
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    episode_length: int = 1000
    success_radius: float = 0.5
    default_backend: str | None = "spring"  # None: pure JAX, no Brax pipeline
    backends: tuple[str, ...] = BACKENDS  # the Brax pipelines that can run it
    reset: str = "first_state"  # the paper's, for every task it reports on

    @property
    def is_maze(self) -> bool:
        """Whether the env takes a maze layout (and so accepts ``--maze-layout``)."""
        return "layout" in self.kwargs

    def make(self, backend: str | None = None, maze_layout: str | None = None,
             maze_goal_noise: float | None = None):
        """The env (a ``crl.envs.base.GoalEnv``); ``backend`` overrides the Brax pipeline,
        ``maze_layout`` (a layout name, file or text) the maze of a maze env and
        ``maze_goal_noise`` its goals' noise (cells either way around a goal cell's centre)."""
        module, name = self.cls.split(":")
        cls = getattr(importlib.import_module(module), name)
        kwargs = dict(self.kwargs)
        if self.default_backend is not None:
            kwargs["backend"] = backend or self.default_backend
        for option, value, key in (("maze layout", maze_layout, "layout"),
                                   ("maze goal noise", maze_goal_noise, "goal_noise")):
            if value is not None:
                if not self.is_maze:
                    raise ValueError(f"{self.cls} is not a maze; it takes no {option}")
                kwargs[key] = value
        return cls(**kwargs)


def _mazes(family: str, cls: str, layouts: tuple[str, ...], **spec: Any) -> dict[str, EnvSpec]:
    return {f"{family}_{layout}": EnvSpec(cls, {"layout": layout}, **spec) for layout in layouts}


# The Humanoid evaluates its Big Maze in a layout of its own (humanoid_big_maze_eval, below).
HUMANOID_MAZE_LAYOUTS = ("u_maze", "u_maze_eval", "big_maze", "hardest_maze")


def _arm(task: str, episode_length: int) -> EnvSpec:
    # Only MJX: crl/envs/arm.py says why.
    return EnvSpec("crl.envs.arm:Arm", {"task": task}, episode_length, success_radius=0.1,
                   default_backend="mjx", backends=("mjx",))


# Every task but the arm's runs 1000-step episodes, Reacher and Pusher included: the benchmark
# trains those tasks with one episode length (1000), and the paper's metric, time at goal,
# counts the steps of a 1000-step episode. Reacher and Pusher run on spring, as in the paper's
# code; Cheetah (not among the paper's tasks) on Brax's own default pipeline for it.
REGISTRY: dict[str, EnvSpec] = {
    "reacher": EnvSpec("crl.envs.reacher:Reacher", success_radius=0.05),
    "pusher_easy": EnvSpec("crl.envs.pusher:Pusher", {"kind": "easy"}, success_radius=0.1),
    "pusher_hard": EnvSpec("crl.envs.pusher:Pusher", {"kind": "hard"}, success_radius=0.1),
    "cheetah": EnvSpec("crl.envs.cheetah:Cheetah", default_backend="generalized"),
    "ant": EnvSpec("crl.envs.ant:Ant"),
    "ant_ball": EnvSpec("crl.envs.ant:AntBall"),
    # MJX, as in the paper's code (its block of 0.2 g).
    "ant_push": EnvSpec("crl.envs.ant:AntPush", default_backend="mjx"),
    **_mazes("ant", "crl.envs.ant:AntMaze", MAZE_LAYOUTS + ANT_LAYOUTS),
    "humanoid": EnvSpec("crl.envs.humanoid:Humanoid"),
    **_mazes("humanoid", "crl.envs.humanoid:HumanoidMaze", HUMANOID_MAZE_LAYOUTS),
    "humanoid_big_maze_eval": EnvSpec("crl.envs.humanoid:HumanoidMaze",
                                      {"layout": "humanoid_big_maze_eval"}),
    # crl's own task (not the paper's): every episode a new start and goal.
    **_mazes("point", "crl.envs.point_maze:PointMaze", MAZE_LAYOUTS, episode_length=250,
             default_backend=None, reset="resample"),
    # The paper's three arm tasks run 1000-step episodes, as every task of its code does (its
    # time-at-goal scores, up to 762, count steps of such episodes). The others, which the paper
    # does not report, run shorter ones (50 ms per step): a reach or a grasp takes a second.
    "arm_reach": _arm("reach", 100),
    "arm_grasp": _arm("grasp", 100),
    "arm_push_easy": _arm("push_easy", 1000),
    "arm_push_hard": _arm("push_hard", 1000),
    "arm_binpick_easy": _arm("binpick_easy", 150),
    "arm_binpick_hard": _arm("binpick_hard", 1000),
}
ALIASES = {"ant_maze": "ant_u_maze", "point_maze": "point_u_maze"}
ENV_NAMES: tuple[str, ...] = tuple(sorted([*REGISTRY, *ALIASES]))


class UnknownEnvError(ValueError):
    pass


def get_spec(name: str) -> EnvSpec:
    name = ALIASES.get(name, name)
    stitching = STITCHING.fullmatch(name)
    if stitching and (stitching["layout"] in MAZE_LAYOUTS or stitching["layout"] in OWN_LAYOUTS):
        distances = tuple(int(k) for k in stitching["distances"].split("f")[:-1])
        return EnvSpec("crl.envs.ant:AntMaze", {"layout": stitching["layout"],
                                                "forward_distances": distances})
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, ENV_NAMES, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UnknownEnvError(f"unknown env {name!r}; {hint}valid: {', '.join(ENV_NAMES)}, "
                              "or a stitching task ant_<layout>_gen_<k>f[<k>f...]")
    return REGISTRY[name]


def make_env(name: str, backend: str | None = None, maze_layout: str | None = None,
             maze_goal_noise: float | None = None):
    """Build the env registered as ``name``."""
    return get_spec(name).make(backend, maze_layout, maze_goal_noise)
