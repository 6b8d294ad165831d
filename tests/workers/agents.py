"""Runs in a process that sees 2 CPU devices (the test sets XLA_FLAGS) and prints one JSON line:
for every baseline agent, the losses and parameters of the same SGD steps on the same global
batches on 1 and on 2 devices, and the metrics of one epoch trained end to end on 2 devices."""

import dataclasses
import json
import sys

import jax
import numpy as np

from crl.config import validate
from crl.train import Trainer, train

sys.path.insert(0, sys.argv[3])
from tiny import BASELINES, TINY, batches_for

NUM_BATCHES = 4


def sgd_on_devices(config, count: int) -> dict:
    trainer = Trainer(config, devices=jax.devices()[:count])
    state = trainer.init(jax.random.PRNGKey(0))
    batches = batches_for(trainer, NUM_BATCHES)
    state, metrics = trainer.sgd_steps(state, batches, jax.random.PRNGKey(1))
    leaves = jax.tree.leaves(jax.device_get(state.agent.params))
    params = np.concatenate([np.ravel(x) for x in leaves])
    return {"metrics": {k: np.asarray(v).tolist() for k, v in metrics.items()},
            "params": params.tolist()}


def main() -> None:
    assert len(jax.devices()) == 2, jax.devices()
    results = {}
    for name, changes in BASELINES.items():
        config = validate(dataclasses.replace(
            TINY, **changes, compile_cache=sys.argv[2], run_dir=sys.argv[1], run_name=name,
            render=False, num_epochs=1, total_env_steps=TINY.min_replay_size * TINY.num_envs
            + 3 * TINY.num_envs * TINY.unroll_length))
        _, history = train(config, log=lambda _: None)
        results[name] = {"1": sgd_on_devices(config, 1), "2": sgd_on_devices(config, 2),
                         "epoch": history[-1]}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
