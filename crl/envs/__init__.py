"""Registry of goal-conditioned environments by name.

Looking a name up imports nothing heavy: an entry names its class by module path and is built
on demand, so bad names are rejected before JAX or Brax is imported.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from typing import Any

BACKENDS = ("spring", "positional", "generalized", "mjx")
MAZE_LAYOUTS = ("u_maze", "u_maze_eval", "u4_maze", "u4_maze_eval", "u5_maze", "u5_maze_eval",
                "big_maze", "big_maze_eval", "hardest_maze")


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """How to build an env and how it is scored."""

    cls: str  # "module:Class"
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    episode_length: int = 1000
    success_radius: float = 0.5
    default_backend: str | None = "spring"  # None: pure JAX, no Brax pipeline

    def make(self, backend: str | None = None):
        """The env (a ``crl.envs.base.GoalEnv``); ``backend`` overrides the Brax pipeline."""
        module, name = self.cls.split(":")
        cls = getattr(importlib.import_module(module), name)
        kwargs = dict(self.kwargs)
        if self.default_backend is not None:
            kwargs["backend"] = backend or self.default_backend
        return cls(**kwargs)


REGISTRY: dict[str, EnvSpec] = {
    "ant": EnvSpec("crl.envs.ant:Ant"),
    **{f"ant_{layout}": EnvSpec("crl.envs.ant:AntMaze", {"layout": layout})
       for layout in MAZE_LAYOUTS},
    **{f"point_{layout}": EnvSpec("crl.envs.point_maze:PointMaze", {"layout": layout},
                                  episode_length=250, default_backend=None)
       for layout in MAZE_LAYOUTS},
}
ALIASES = {"ant_maze": "ant_u_maze", "point_maze": "point_u_maze"}
ENV_NAMES: tuple[str, ...] = tuple(sorted([*REGISTRY, *ALIASES]))


class UnknownEnvError(ValueError):
    pass


def get_spec(name: str) -> EnvSpec:
    name = ALIASES.get(name, name)
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, ENV_NAMES, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UnknownEnvError(f"unknown env {name!r}; {hint}valid: {', '.join(ENV_NAMES)}")
    return REGISTRY[name]


def make_env(name: str, backend: str | None = None):
    """Build the env registered as ``name``."""
    return get_spec(name).make(backend)
