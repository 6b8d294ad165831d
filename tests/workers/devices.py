"""Runs in a process that sees 4 CPU devices (the test sets XLA_FLAGS) and prints one JSON line:
the losses of the same SGD steps on the same global batches with 1, 2 and 4 devices, the
metrics of one epoch trained end to end on 4 devices, and those of a --seeds 0 1 group on the 4
devices (2 for the seeds x 2 for each seed's envs and batches) beside each seed trained alone on
2 devices."""

import dataclasses
import json
import sys

import jax
import numpy as np

from crl.config import Config, ConfigError, validate
from crl.train import Trainer, evaluation_key, train

CONFIG = validate(Config(
    env="point_u_maze", depth=8, width=32, repr_dim=16, num_envs=8, batch_size=32,
    episode_length=25, unroll_length=10, min_replay_size=25, max_replay_size=200,
    num_sgd_batches_per_training_step=4, total_env_steps=8 * 30 + 80, num_epochs=1,
    num_eval_envs=8, compile_cache=sys.argv[2], run_dir=sys.argv[1], run_name="four_devices"))
NUM_BATCHES = 6


def same_batches() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shape = (NUM_BATCHES, CONFIG.batch_size)
    return {"state": rng.uniform(0, 12, (*shape, 2)).astype(np.float32),
            "action": rng.uniform(-1, 1, (*shape, 2)).astype(np.float32),
            "goal": rng.uniform(0, 12, (*shape, 2)).astype(np.float32)}


def sgd_on_devices(count: int) -> dict:
    trainer = Trainer(CONFIG, devices=jax.devices()[:count])
    key = jax.random.PRNGKey(0)
    state = trainer.init(key)
    state, metrics = trainer.sgd_steps(state, same_batches(), key)
    leaves = jax.tree.leaves(jax.device_get(state.agent.params))
    params = np.concatenate([np.ravel(x) for x in leaves])
    return {name: np.asarray(metrics[name]).tolist()
            for name in ("critic_loss", "actor_loss", "alpha_loss")} | {"params": params.tolist()}


def alone_on_two_devices(seed: int) -> dict:
    """One epoch of ``seed`` as crl.train runs it, on 2 devices: its train and eval metrics."""
    config = dataclasses.replace(CONFIG, seed=seed)
    trainer = Trainer(config, devices=jax.devices()[:2])
    state = trainer.prefill(trainer.init(trainer.init_key()))
    state, metrics = trainer.train_epoch(state)
    evaluation = trainer.evaluate(state.agent.params, evaluation_key(config, 1))
    return {k if k.startswith("diag/") else f"train/{k}": np.asarray(v).tolist()
            for k, v in metrics.items()} | {
        k: float(v) for k, v in evaluation.items()}


def main() -> None:
    assert len(jax.devices()) == 4, jax.devices()
    results = {str(count): sgd_on_devices(count) for count in (1, 2, 4)}
    try:
        Trainer(dataclasses.replace(CONFIG, num_envs=6))
        results["indivisible"] = None
    except ConfigError as error:
        results["indivisible"] = str(error)
    _, history = train(CONFIG, log=lambda _: None)
    results["epoch"] = history[-1]
    _, histories = train(dataclasses.replace(CONFIG, seeds=(0, 1), run_name="group"),
                         log=lambda _: None)
    results["group"] = [seed_history[-1] for seed_history in histories]
    results["alone"] = [alone_on_two_devices(seed) for seed in (0, 1)]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
