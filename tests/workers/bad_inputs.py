"""Runs ``python -m crl.train``'s ``main`` on each bad command line of a JSON list (argv[1]),
each in this one process (imports paid once, as a fresh process pays them), and writes for each
its exit code, stderr, seconds and whether anything was left in its run directory (argv[2]).
Started with two CPU devices, so that device splits can be refused."""

import contextlib
import io
import json
import sys
import time
import traceback
from pathlib import Path

start = time.perf_counter()
from crl.train import main  # noqa: E402

import_s = time.perf_counter() - start

if __name__ == "__main__":
    cases = json.loads(Path(sys.argv[1]).read_text())
    results = []
    for case in cases:
        run_dir = Path(case["run_dir"])
        before = sorted(p.name for p in run_dir.iterdir()) if run_dir.exists() else []
        err = io.StringIO()
        start = time.perf_counter()
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
                        "seconds": time.perf_counter() - start, "written": after != before})
    Path(sys.argv[2]).write_text(json.dumps({"import_s": import_s, "results": results}))
