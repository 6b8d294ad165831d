"""Data parallelism over devices and processes, and bfloat16 compute.

Several devices are forced on the CPU with XLA_FLAGS, which must be set before JAX starts, so
those checks run in subprocesses (tests/workers/)."""

import dataclasses
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from tiny import metric_atol

from crl import runs
from crl.config import Config, ConfigError, validate
from crl.train import Trainer

WORKERS = Path(__file__).parent / "workers"


def forced_devices_env(count: int) -> dict[str, str]:
    flags = os.environ.get("XLA_FLAGS", "")
    return {**os.environ, "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={count}"}


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory, compile_cache) -> dict:
    run_dir = tmp_path_factory.mktemp("four_devices")
    result = subprocess.run([sys.executable, str(WORKERS / "devices.py"), str(run_dir),
                             compile_cache], capture_output=True, text=True, timeout=900,
                            env=forced_devices_env(4))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_device_count_does_not_change_the_sgd_steps(four_devices):
    """The same global batches give the same losses and parameters on 1, 2 and 4 devices."""
    one = four_devices["1"]
    for count in ("2", "4"):
        for name in ("critic_loss", "actor_loss", "alpha_loss"):
            np.testing.assert_allclose(four_devices[count][name], one[name], rtol=2e-5,
                                       atol=2e-6, err_msg=f"{name} on {count} devices")
        np.testing.assert_allclose(four_devices[count]["params"], one["params"], rtol=1e-4,
                                   atol=1e-5)
    # The steps did learn something: the same numbers are not a constant.
    assert one["critic_loss"][0] != one["critic_loss"][-1]


def test_one_epoch_trains_end_to_end_on_four_devices(four_devices):
    epoch = four_devices["epoch"]
    assert epoch["epoch"] == 1
    assert math.isfinite(epoch["train/critic_loss"]) and 0 <= epoch["eval/success_any"] <= 1


def test_a_group_of_seeds_on_four_devices_is_each_seed_on_two(four_devices):
    """--seeds 0 1 on 4 devices: each seed on 2 of them, data parallel, as when alone on 2."""
    for seed, (group, alone) in enumerate(zip(four_devices["group"], four_devices["alone"],
                                              strict=True)):
        assert group["epoch"] == 1
        for name, value in alone.items():
            np.testing.assert_allclose(group[name], value, rtol=1e-5, atol=metric_atol(name),
                                       err_msg=f"seed {seed}: {name}")
    assert four_devices["group"][0]["train/critic_loss"] != \
        four_devices["group"][1]["train/critic_loss"]


def test_global_sizes_must_divide_by_the_device_count(four_devices):
    assert four_devices["indivisible"] == ("num_envs=6 must divide by the 4 devices: use a "
                                           "multiple of 4, e.g. 8")


def test_launch_options_come_together():
    small = Config(env="point_u_maze", num_envs=4, batch_size=8, episode_length=20,
                   min_replay_size=20, max_replay_size=100, total_env_steps=10_000,
                   num_epochs=2, unroll_length=10, num_eval_envs=4)
    with pytest.raises(ConfigError, match="num_processes given without coordinator_address"):
        validate(dataclasses.replace(small, num_processes=2))
    with pytest.raises(ConfigError, match=r"process_id=2 must be in \[0, num_processes=2\)"):
        validate(dataclasses.replace(small, coordinator_address="localhost:1234",
                                     num_processes=2, process_id=2))
    with pytest.raises(ConfigError, match="compute_dtype='float16' is unknown"):
        validate(dataclasses.replace(small, compute_dtype="float16"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_one_agent(tmp_path, compile_cache):
    """Two processes of two CPU devices each, joined over localhost, train one epoch: they end
    with the same parameters, and only process 0 wrote the run directory."""
    port = free_port()
    args = ["--env", "point_u_maze", "--depth", "4", "--width", "32", "--repr-dim", "16",
            "--num-envs", "8", "--batch-size", "32", "--episode-length", "25",
            "--unroll-length", "10", "--min-replay-size", "25", "--max-replay-size", "200",
            "--num-sgd-batches-per-training-step", "4", "--total-env-steps", "400",
            "--num-epochs", "1", "--num-eval-envs", "8", "--run-dir", str(tmp_path / "runs"),
            "--compile-cache", compile_cache, "--coordinator-address", f"localhost:{port}",
            "--num-processes", "2"]
    processes = [subprocess.Popen(
        [sys.executable, str(WORKERS / "process.py"), str(tmp_path / f"params{rank}.npz"),
         *args, "--process-id", str(rank)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=forced_devices_env(2)) for rank in (0, 1)]
    outputs = [process.communicate(timeout=900) for process in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]

    params = [np.load(tmp_path / f"params{rank}.npz") for rank in (0, 1)]
    assert len(params[0].files) > 10
    for name in params[0].files:
        np.testing.assert_array_equal(params[0][name], params[1][name], err_msg=name)

    (run,) = (tmp_path / "runs").iterdir()  # one directory, named the same by both processes
    assert [m["epoch"] for m in runs.read_metrics(run)] == [0, 1]  # written once, not twice
    assert "epoch 1/1" in outputs[0][1] and "epoch 1/1" not in outputs[1][1]
    assert "initial policy" in outputs[0][0] and "initial policy" not in outputs[1][0]


@pytest.fixture(scope="module")
def bfloat16_and_float32_steps(compile_cache) -> dict[str, tuple]:
    config = validate(Config(
        env="point_u_maze", depth=8, width=64, repr_dim=16, num_envs=8, batch_size=64,
        episode_length=25, unroll_length=10, min_replay_size=25, max_replay_size=200,
        total_env_steps=1_000, num_epochs=1, num_eval_envs=8, compile_cache=compile_cache))
    rng = np.random.default_rng(0)
    shape = (20, config.batch_size)
    batches = {"state": rng.uniform(0, 12, (*shape, 2)).astype(np.float32),
               "action": rng.uniform(-1, 1, (*shape, 2)).astype(np.float32),
               "goal": rng.uniform(0, 12, (*shape, 2)).astype(np.float32)}
    results = {}
    for dtype in ("float32", "bfloat16"):
        trainer = Trainer(dataclasses.replace(config, compute_dtype=dtype))
        state = trainer.init(jax.random.PRNGKey(0))
        program = trainer.sgd_steps.lower(state, batches, jax.random.PRNGKey(1)).as_text()
        products = [line for line in program.splitlines() if "dot_general" in line]
        results[dtype] = (*trainer.sgd_steps(state, batches, jax.random.PRNGKey(1)),
                          sum("bf16" in line for line in products), len(products))
    return results


def test_bfloat16_compute_tracks_float32(bfloat16_and_float32_steps):
    """Over 20 SGD steps on the same batches the losses stay within 0.05% (critic) and 1%
    (actor) of float32, measured at 0.008% and 0.47%. bfloat16 keeps 8 mantissa bits, about
    0.4% per rounding; LayerNorm and the losses run in float32, which keeps the errors from
    compounding."""
    (_, full, f32_bf16_products, _), (_, half, bf16_products, products) = (
        bfloat16_and_float32_steps[d] for d in ("float32", "bfloat16"))
    np.testing.assert_allclose(half["critic_loss"], full["critic_loss"], rtol=5e-4)
    np.testing.assert_allclose(half["actor_loss"], full["actor_loss"], rtol=1e-2)
    # It did run in bf16: the networks' matrix products (all but the energies' few) are bf16
    # in the compiled program, none in float32's, and the losses differ by more than float32's
    # reordering of sums would make them.
    assert f32_bf16_products == 0 and bf16_products >= 0.9 * products
    relative = np.abs(half["critic_loss"] - full["critic_loss"]) / np.abs(full["critic_loss"])
    assert relative.max() > 1e-5


def test_bfloat16_keeps_parameters_and_optimiser_states_float32(bfloat16_and_float32_steps):
    state, *_ = bfloat16_and_float32_steps["bfloat16"]
    for tree in (state.agent.params, state.agent.actor_opt, state.agent.critic_opt,
                 state.agent.log_alpha):
        for leaf in jax.tree.leaves(tree):
            if jax.numpy.issubdtype(leaf.dtype, jax.numpy.floating):
                assert leaf.dtype == np.float32
