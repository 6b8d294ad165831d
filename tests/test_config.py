import dataclasses
import os
import subprocess
import sys
import time

import pytest

from crl.config import PRESETS, Config, ConfigError, parse_args, validate

SMALL = Config(env="point_u_maze", num_envs=4, batch_size=8, episode_length=20,
               min_replay_size=20, max_replay_size=100, total_env_steps=10_000, num_epochs=2,
               unroll_length=10, num_eval_envs=4)


@pytest.mark.parametrize(("change", "message"), [
    ({"depth": 3}, "depth=3 must be a positive multiple of 4"),
    ({"critic_depth": 6}, "critic_depth=6 must be a positive multiple of 4"),
    ({"env": "antmaze"}, "unknown env 'antmaze'; did you mean 'ant_maze'"),
    ({"eval_env": "point_u_maz"}, "eval_env: unknown env 'point_u_maz'"),
    ({"energy": "l1"}, "energy='l1' is unknown; valid: l2, dot, cosine, l2_squared"),
    ({"contrastive_loss": "nce"}, "contrastive_loss='nce' is unknown; valid: fwd_infonce"),
    ({"batch_size": 77}, "batch_size=77 is larger than the 76 transitions"),
    ({"num_envs": 0}, "num_envs=0 must be a positive integer"),
    ({"total_env_steps": 100}, "total_env_steps=100 leaves no training step"),
    ({"min_replay_size": 10}, "min_replay_size=10 must be at least episode_length=20"),
    ({"discount": 1.0}, "discount=1.0 must be in (0, 1)"),
    ({"backend": "spring"}, "pure JAX"),
    ({"env": "ant", "backend": "bullet"}, "backend='bullet' is not a Brax pipeline"),
    ({"env": "arm_reach", "backend": "spring"}, "backend='spring' cannot run env 'arm_reach'; "
     "valid: mjx"),
])
def test_invalid_values_are_named_in_one_line(change, message):
    with pytest.raises(ConfigError) as error:
        validate(dataclasses.replace(SMALL, **change))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_resolution_fills_env_and_depth_defaults():
    config = validate(Config(env="ant_maze", depth=8, critic_depth=16))
    assert config.env == "ant_maze" and config.eval_env == "ant_maze"
    assert config.backend == "spring" and config.episode_length == 1000
    assert (config.actor_depth, config.critic_depth) == (8, 16)
    # The paper's schedule: 99,488,000 env steps after the prefill, 100 epochs of training steps
    # of 512 envs x 62 steps = 31,744 env steps: 31.34, so 31 training steps per epoch.
    assert config.training_steps_per_epoch == 31
    assert config.sgd_batches_per_training_step == 800


def test_presets_are_valid_and_overridable():
    for preset in PRESETS.values():
        validate(preset)
    config = parse_args(["--preset", "point_quick", "--seed", "3"])
    assert config.env == PRESETS["point_quick"].env and config.seed == 3


@pytest.mark.parametrize("args", [["--env", "ant_maze", "--depth", "3"], ["--env", "antmaze"],
                                  ["--preset", "nope"]])
def test_cli_rejects_bad_input_before_compiling_with_one_line(args, tmp_path):
    start = time.monotonic()
    # JAX_LOG_COMPILES makes JAX log every compilation ("Compiling <fn> ...") to stderr.
    result = subprocess.run([sys.executable, "-m", "crl.train", *args, "--run-dir",
                             str(tmp_path)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "JAX_LOG_COMPILES": "1"})
    elapsed = time.monotonic() - start
    assert result.returncode == 2
    assert "Compiling" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("crl: error")]
    assert len(lines) == 1, result.stderr
    assert args[-1] in lines[0]
    assert not any(tmp_path.iterdir())  # nothing was written
    print(f"rejected {args} in {elapsed:.1f}s")
