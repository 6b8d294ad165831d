"""The commands of docs/reproduction.md: their grids, validated, and their predicted cost.

    python experiments/reproduction.py              # GPU-hours of every command, on an H100
    python experiments/reproduction.py --gpu a100-80g

Every ``python -m crl.sweep`` or ``python -m crl.train`` line of the doc's ``bash`` blocks is
parsed with crl's own option parsing and validation (``crl.sweep.parse`` and ``build_grid``,
``crl.config.parse_args``), so that a stale command fails here and in
tests/test_reproduction.py. The cost of a command is the sum over its runs of crl.plan's
predicted run time (SGD steps and acting at the plan's stated fractions of the device's peak;
env physics is not in the model), in GPU-hours: predictions, not measurements.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's crl

DOC = Path(__file__).resolve().parents[1] / "docs" / "reproduction.md"
PREFIXES = ("python -m crl.sweep ", "python -m crl.train ")


def commands(doc: Path = DOC) -> list[str]:
    """The crl.sweep and crl.train commands of the doc's ``bash`` blocks, in order (a line
    ending in a backslash continues on the next)."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith(PREFIXES):
                found.append(line)
    return found


def configs(command: str, one_seed: bool = False) -> list:
    """The validated config of every run ``command`` trains (exits with crl's one-line error
    when one is invalid). ``one_seed``: the first seed of a swept list only, which validates
    the same options in a fraction of the time."""
    from crl import sweep
    from crl.config import parse_args

    argv = shlex.split(command)[3:]
    if command.startswith("python -m crl.train"):
        return [parse_args(argv)]
    _, base, axes = sweep.parse(argv)
    if one_seed and "--seed" in axes:
        axes = {**axes, "--seed": axes["--seed"][:1]}
    return [run.config for run in sweep.build_grid(base, axes)]


def gpu_hours(command: str, gpu: str) -> tuple[int, float]:
    """Runs of ``command`` and crl.plan's predicted GPU-hours of all of them on ``gpu``."""
    from crl import plan

    runs = configs(command)
    device = plan.DEVICES[gpu]
    return len(runs), sum(plan.make_plan(config, device).run_seconds for config in runs) / 3600


def main() -> None:
    from crl import plan

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", default="h100", choices=sorted(plan.DEVICES))
    args = parser.parse_args()
    total = 0.0
    for command in commands():
        runs, hours = gpu_hours(command, args.gpu)
        total += hours
        print(f"{runs:4d} runs {hours:10,.0f} GPU-h  {command}")
    print(f"total {total:,.0f} GPU-hours on {plan.DEVICES[args.gpu].label} (predicted)")


if __name__ == "__main__":
    main()
