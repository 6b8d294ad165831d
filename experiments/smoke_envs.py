"""Run one tiny training epoch of ``python -m crl.train`` on every registered environment.

    python experiments/smoke_envs.py                   # every name (aliases once)
    python experiments/smoke_envs.py --names reacher,ant_push --fast-compile
    python experiments/smoke_envs.py --names humanoid,reacher:mjx   # name:backend, a pipeline

Each run goes through ``crl.train.main`` exactly as the command line does, with the smallest
sizes (2 envs, width 16, 10-step episodes), in one process so that JAX starts once. Compilation
is nearly all of the time; ``--fast-compile`` asks XLA for its cheapest settings
(``CRL_FAST_COMPILE=1``: a third of the compile time, slower code, fine for a smoke test).
Prints one line per env and exits non-zero if any run failed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's crl

TINY = ["--depth", "4", "--width", "16", "--repr-dim", "8", "--num-envs", "2", "--batch-size",
        "8", "--episode-length", "10", "--unroll-length", "5", "--min-replay-size", "10",
        "--max-replay-size", "20", "--num-sgd-batches-per-training-step", "1",
        "--total-env-steps", "30", "--num-epochs", "1", "--num-eval-envs", "2",
        # An env's smoke test; the diagnostics' compilation is tested with the tiny run, and
        # rendering with the Ant maze's (tests/test_train.py): a third of an MJX env's time.
        "--no-diagnostics", "--no-render"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", default="",
                        help="comma-separated env names, each optionally name:backend "
                             "(default: every name on its default pipeline)")
    parser.add_argument("--fast-compile", action="store_true",
                        help="compile with XLA's cheapest settings")
    parser.add_argument("--compile-cache", default="", help="JAX compilation cache ('' = off)")
    args = parser.parse_args()
    from crl import envs, runs, train

    if args.fast_compile:
        os.environ[train.FAST_COMPILE_ENV] = "1"

    names = args.names.split(",") if args.names else list(envs.REGISTRY)
    failed = []
    total_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="crl-smoke-") as run_dir:
        for name in names:
            start = time.perf_counter()
            env, _, backend = name.partition(":")
            run_name = name.replace(":", "_")
            argv = ["--env", env, *(["--backend", backend] if backend else []), *TINY,
                    "--run-dir", run_dir, "--run-name", run_name,
                    "--compile-cache", args.compile_cache]
            log = io.StringIO()
            try:
                with contextlib.redirect_stdout(log):
                    train.main(argv)
                metrics = runs.read_metrics(Path(run_dir) / run_name)
                if [m["epoch"] for m in metrics] != [0, 1]:
                    raise RuntimeError(f"metrics of epochs {[m['epoch'] for m in metrics]}")
                status = f"ok   critic_loss={metrics[1]['train/critic_loss']:.3f}"
            except (Exception, SystemExit) as error:  # report every env, then fail
                failed.append(name)
                status = f"FAIL {type(error).__name__}: {error}"
                print(log.getvalue(), file=sys.stderr)
                traceback.print_exc()
            print(f"{name:24s} {time.perf_counter() - start:6.1f}s  {status}", flush=True)
    print(f"{len(names) - len(failed)}/{len(names)} envs trained one epoch in "
          f"{time.perf_counter() - total_start:.0f}s" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
