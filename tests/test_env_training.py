"""Training from the command line on envs whose training differs most from the Ant maze's.
A module of its own so that a parallel test run can give it a worker while others run."""

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_representative_envs_train_one_epoch_from_the_command_line(compile_cache):
    """``experiments/smoke_envs.py`` trains one tiny epoch on every registered env (minutes per
    env family); here on the two whose training differs most from the Ant maze's that
    tests/test_train.py trains: terminations and the largest observation (humanoid), and MJX
    and its checkpoints (on Reacher, whose model compiles much faster than the arm's). The
    arm tasks' physics, walls and a pushed object (ant_push) are stepped by
    tests/test_env_suite.py; the generalized and MJX pipelines under shard_map by
    test_every_pipeline_steps_episodes_under_shard_map."""
    root = Path(__file__).resolve().parents[1]
    names = "humanoid,reacher:mjx"
    result = subprocess.run([sys.executable, str(root / "experiments" / "smoke_envs.py"),
                             "--names", names, "--fast-compile", "--compile-cache",
                             compile_cache], capture_output=True, text=True, timeout=1800)
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "2/2 envs trained one epoch" in result.stdout
