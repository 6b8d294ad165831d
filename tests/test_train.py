import dataclasses
import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from crl import runs
from crl.config import PRESETS, validate
from crl.train import Trainer, train


def test_run_directory_holds_config_and_one_metrics_line_per_epoch(tiny_run):
    config, _, history, path = tiny_run
    assert runs.load_config(path) == config
    lines = runs.read_metrics(path)
    assert lines == json.loads(json.dumps(history))
    assert [m["epoch"] for m in lines] == [0, 1, 2]
    # By hand for TINY: the prefill is ceil(25 / 10) = 3 unrolls of 10 steps of 8 envs = 240
    # steps; an epoch is (680 - 25 * 8) / (2 epochs * 80 steps per training step) = 3 training
    # steps of 80 = 240 steps.
    assert [m["env_steps"] for m in lines] == [240, 480, 720]
    for metrics in lines[1:]:
        for key in ("eval/success", "eval/success_any", "eval/success_easy", "eval/dist",
                    "train/critic_loss", "train/actor_loss", "train/alpha", "train/entropy",
                    "time/env_steps_per_s", "time/sgd_steps_per_s"):
            assert math.isfinite(metrics[key]), key
        assert 0 <= metrics["eval/success_any"] <= 1
        assert 0 <= metrics["eval/success"] <= metrics["eval/success_easy"] <= 25
    assert lines[0]["time/compile_epoch_s"] > 0


def test_training_moves_every_parameter_and_keeps_float32(tiny_run):
    config, state, _, _ = tiny_run
    initial = Trainer(config).init(jax.random.PRNGKey(config.seed))

    def changed(a, b):
        assert a.dtype == np.float32 and np.all(np.isfinite(a))
        return not np.allclose(a, b)

    moved = jax.tree.leaves(jax.tree.map(changed, state.agent.params, initial.agent.params))
    assert all(moved)
    assert float(state.agent.log_alpha) < 0  # the temperature adapts from log_alpha = 0
    # 3 prefill unrolls + 2 epochs x 3 training steps, of 10 steps each, in a buffer of 200.
    assert int(state.buffer.size) == 90


def test_a_new_run_never_overwrites_an_existing_one(tiny_run):
    config, _, _, path = tiny_run
    before = {f: f.read_bytes() for f in path.rglob("*") if f.is_file()}
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(config, log=lambda _: None)
    assert {f: f.read_bytes() for f in path.rglob("*") if f.is_file()} == before


@pytest.mark.slow
def test_point_u_maze_learns(tmp_path, compile_cache, optimised_compile):
    """The README's first run, its first 5 epochs: success rises from the initial policy's
    level to at least one half of the episodes in epochs 3 to 5."""
    config = validate(dataclasses.replace(PRESETS["point_quick"], total_env_steps=250_000,
                                          num_epochs=5, run_dir=str(tmp_path),
                                          compile_cache=compile_cache))
    assert config.total_env_steps // config.num_epochs == (
        PRESETS["point_quick"].total_env_steps // PRESETS["point_quick"].num_epochs)
    _, history = train(config, log=print)
    initial = history[0]["eval/success_any"]
    best = max(m["eval/success_any"] for m in history[-3:])
    print("success_any by epoch:", [round(m["eval/success_any"], 3) for m in history])
    assert best >= 0.5 and best >= initial + 0.2


@pytest.mark.slow
def test_ant_maze_trains_renders_and_resumes_from_the_command_line(tmp_path, compile_cache):
    args = ["--env", "ant_maze", "--depth", "8", "--width", "32", "--num-envs", "2",
            "--batch-size", "16", "--episode-length", "20", "--unroll-length", "10",
            "--min-replay-size", "20", "--max-replay-size", "100",
            "--num-sgd-batches-per-training-step", "2", "--total-env-steps", "80",
            "--num-epochs", "1", "--num-eval-envs", "2", "--run-dir", str(tmp_path),
            "--run-name", "ant", "--compile-cache", compile_cache]
    # EGL: Mesa's software OpenGL here, a GPU's on a cluster node.
    env = {**os.environ, "MUJOCO_GL": "egl"}
    result = subprocess.run([sys.executable, "-m", "crl.train", *args], capture_output=True,
                            text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    path = tmp_path / "ant"
    lines = runs.read_metrics(path)
    assert [m["epoch"] for m in lines] == [0, 1]
    assert math.isfinite(lines[1]["train/critic_loss"])
    assert 0 <= lines[1]["eval/dist"] < 100
    # The final policy, rendered: Brax's viewer, a top view of the torso's path, a video.
    assert "brax" in (path / "render" / "epoch_1.html").read_text().lower()
    assert (path / "render" / "epoch_1.png").stat().st_size > 0
    assert (path / "render" / "epoch_1.mp4").stat().st_size > 0
    # The Brax env state (physics pipeline state) survives a checkpoint: resume one more epoch.
    result = subprocess.run([sys.executable, "-m", "crl.train", "--resume", str(path),
                             "--num-epochs", "2", "--no-render"], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [m["epoch"] for m in runs.read_metrics(path)] == [0, 1, 2]


def test_every_compilation_of_a_run_takes_the_trainers_compiler_options(tmp_path, monkeypatch):
    """MJX steps need XLA's fusion emitters off on a CPU, and CRL_FAST_COMPILE=1 asks for XLA's
    cheapest settings there. Training, evaluating a saved policy and rendering each compile with
    the trainer's options, which a made-up option shows by failing each of them."""
    from tiny import TINY

    from crl import render
    from crl import train as train_module
    from crl.evaluate import evaluate_policy
    from crl.train import compiler_options

    monkeypatch.setenv("CRL_FAST_COMPILE", "0")
    assert compiler_options("mjx", "cpu") == {"xla_cpu_use_fusion_emitters": False}
    assert compiler_options("mjx", "gpu") is None
    assert compiler_options("generalized", "cpu") is None
    assert compiler_options(None, "cpu") is None
    monkeypatch.setenv("CRL_FAST_COMPILE", "1")  # the suite's own setting, on CPUs only
    cheapest = {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 0}
    assert compiler_options(None, "cpu") == compiler_options("mjx", "cpu") == cheapest
    assert compiler_options(None, "gpu") is None and compiler_options("mjx", "tpu") is None
    monkeypatch.setattr(train_module, "compiler_options",
                        lambda backend, platform: {"xla_made_up_option": True})
    config = validate(dataclasses.replace(TINY, run_dir=str(tmp_path), run_name="options"))
    trainer = Trainer(config)
    key = jax.random.PRNGKey(0)
    params = trainer.agent.init(key).params
    runs = {
        "train": lambda: train(config, log=lambda _: None),
        "evaluate": lambda: evaluate_policy(trainer, params, epoch=0),
        "render": lambda: render.rollout(trainer, params, key, episodes=1),
    }
    for name, run in runs.items():
        with pytest.raises(Exception, match="xla_made_up_option"):
            run()
        print(name, "compiled with the trainer's options")
