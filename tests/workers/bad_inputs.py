"""Runs ``python -m crl.train``'s ``main`` on each bad command line of a JSON list (argv[1]),
each in this one process, and writes for each its exit code, stderr, how many XLA compilations
it started and whether anything was left in its run directory (argv[2]).
Started with two CPU devices, so that device splits can be refused."""

import contextlib
import io
import json
import sys
import traceback
from pathlib import Path

import jax.monitoring

from crl.envs import make_env
from crl.train import main

compilations = []


def count_compilation(event: str, *_, **__) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        compilations.append(event)


jax.monitoring.register_event_duration_secs_listener(count_compilation)

if __name__ == "__main__":
    cases = json.loads(Path(sys.argv[1]).read_text())
    # Building a Brax env copies its arrays through small jitted functions; building each env
    # the cases name once here caches those, so that a case's count is the run's own.
    for name in {argv[i + 1] for argv in (case["argv"] for case in cases)
                 for i, arg in enumerate(argv[:-1]) if arg in ("--env", "--eval-env")}:
        make_env(name)
    results = []
    for case in cases:
        run_dir = Path(case["run_dir"])
        before = sorted(p.name for p in run_dir.iterdir()) if run_dir.exists() else []
        err = io.StringIO()
        compilations.clear()
        code = 0
        with contextlib.redirect_stderr(err):
            try:
                main(case["argv"])
            except SystemExit as exit_:
                code = exit_.code
            except BaseException:
                traceback.print_exc(file=err)
                code = "traceback"
        after = sorted(p.name for p in run_dir.iterdir()) if run_dir.exists() else []
        results.append({"code": code, "stderr": err.getvalue(),
                        "compilations": len(compilations), "written": after != before})
    # The count is only worth something if the listener hears a compilation when one happens.
    compilations.clear()
    jax.jit(lambda x: x + 1)(1)
    Path(sys.argv[2]).write_text(json.dumps({"control": len(compilations), "results": results}))
