"""One of several processes training one agent together through ``jax.distributed`` (the test
starts them): trains from the command-line arguments after the first, then saves this process's
final parameters to the file named by the first."""

import sys

import jax
import numpy as np

from crl.config import parse_args
from crl.train import train

if __name__ == "__main__":
    state, history = train(parse_args(sys.argv[2:]))
    params = jax.device_get(state.agent.params)
    np.savez(sys.argv[1], *jax.tree.leaves(params),
             final_critic_loss=history[-1]["train/critic_loss"])
