"""Size and speed of a checkpoint of the paper's configuration (or any other).

    python experiments/checkpoint_benchmark.py --env ant_maze --depth 1024 [--no-checkpoint-buffer]

Builds the training state of the configuration (no training) and fills its float arrays with
random numbers: a fresh state's zeros (empty replay, Adam moments) compress to nothing, a trained
one's do not. Writes one checkpoint into a temporary directory, reads it back, and prints the
size of each item and the seconds taken. Every option of `python -m crl.train` is accepted.
"""

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from crl.checkpoint import Checkpoints, Meta, directory_size
from crl.config import parse_args
from crl.train import Trainer


def main() -> None:
    config = parse_args(sys.argv[1:])
    trainer = Trainer(config)
    start = time.perf_counter()
    state = trainer.init(jax.random.PRNGKey(config.seed))
    noise = jax.random.PRNGKey(1)
    state = jax.block_until_ready(jax.tree.map(
        lambda x: (jax.random.normal(noise, x.shape, x.dtype)
                   if jnp.issubdtype(x.dtype, jnp.floating) else x), state))
    print(f"{config.env}, depth {config.depth}, width {config.width}, {config.num_envs} envs, "
          f"replay {config.max_replay_size}: state built in {time.perf_counter() - start:.1f}s")
    with tempfile.TemporaryDirectory() as directory:
        checkpoints = Checkpoints(Path(directory), keep=1)
        meta = Meta(epoch=0, env_steps=0, has_buffer=config.checkpoint_buffer,
                    config=dataclasses.asdict(config))
        seconds = checkpoints.save(state, meta)
        step = checkpoints.directory / "0"
        sizes = {item.name: directory_size(item) for item in step.iterdir() if item.is_dir()}
        print(f"written in {seconds:.1f}s: {directory_size(step) / 2**20:,.1f} MiB "
              f"({', '.join(f'{k} {v / 2**20:,.1f} MiB' for k, v in sorted(sizes.items()))})")
        del state
        start = time.perf_counter()
        jax.block_until_ready(checkpoints.restore(trainer, 0)[0])
        print(f"read back in {time.perf_counter() - start:.1f}s")
        checkpoints.close()


if __name__ == "__main__":
    main()
