import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    result = subprocess.run([ruff, "check", "crl", "tests", "experiments"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_the_readmes_install_and_test_commands():
    """The README opens with install, run, test; .ci/run must run the first and the last."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```")[1].splitlines()[1:]  # the first code block, after ```bash
    install, _, tests = block[:3]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci and tests in ci, (install, tests)
    assert ci.index(install) < ci.index(tests)
