"""``python -m crl.envs``: every registered environment with its observation and action sizes,
goal, success radius, episode length, what an episode restarts from (reset) and default
pipeline. ``--markdown`` prints the same as a Markdown table (the one in
docs/environments.md)."""

from __future__ import annotations

import argparse
import warnings

from crl.envs import ALIASES, REGISTRY

COLUMNS = ("name", "obs", "action", "goal", "goal indices", "success radius", "episode length",
           "reset", "default backend")


def describe() -> list[tuple[str, ...]]:
    rows = []
    for name, spec in REGISTRY.items():
        env = spec.make()
        rows.append((name, str(env.observation_size), str(env.action_size), env.goal_name,
                     ",".join(map(str, env.goal_indices)), f"{spec.success_radius:g}",
                     str(spec.episode_length), spec.reset, spec.default_backend or "pure JAX"))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m crl.envs", description=__doc__)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="Brax System, piplines")
    rows = describe()
    if args.markdown:
        print("| " + " | ".join(COLUMNS) + " |")
        print("|" + "---|" * len(COLUMNS))
        for row in rows:
            print("| " + " | ".join((f"`{row[0]}`", *row[1:])) + " |")
    else:
        widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(COLUMNS)]
        for row in (COLUMNS, *rows):
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                  .rstrip())
    print()
    print("Aliases: " + ", ".join(f"{alias} = {name}" for alias, name in ALIASES.items()))
    print("Stitching tasks (the paper code's ant_maze_generalization): ant_<layout>_gen_<k>f[<k>f"
          "...], start and goal k cells apart along a one-corridor maze, e.g. "
          "ant_u4_maze_gen_1f2f3f")


if __name__ == "__main__":
    main()
