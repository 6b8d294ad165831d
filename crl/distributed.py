"""Several processes (hosts) training one agent, with JAX's own multi-process runtime.

Every process runs the same program over one global device mesh: each owns the environments and
replay of its local devices, parameters are replicated, and collectives cross hosts inside the
compiled step. Only process 0 writes the run directory and the console.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from crl.config import Config

AXIS = "data"  # the device mesh axis that envs, replay and batches are split over
SEED_AXIS = "seeds"  # with --seeds, the mesh axis that the seeds are split over


def launched_by_slurm_with_several_tasks() -> bool:
    """``srun`` started this process as one of several tasks of a job step. (A batch script's
    own shell also sees SLURM_NTASKS, but only srun sets the step's task count.)"""
    return int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1


def initialize(config: Config) -> None:
    """Join the other processes of this run, if there are any; a single process does nothing."""
    if config.coordinator_address is not None:
        jax.distributed.initialize(coordinator_address=config.coordinator_address,
                                   num_processes=config.num_processes,
                                   process_id=config.process_id)
    elif launched_by_slurm_with_several_tasks():
        jax.distributed.initialize()  # JAX reads the coordinator and ranks from Slurm


def is_main_process() -> bool:
    return jax.process_index() == 0


def shared_timestamp() -> str:
    """Process 0's wall-clock time, so that every process names the run directory the same."""
    now = np.int64(time.time())
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        now = multihost_utils.broadcast_one_to_all(now)
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(int(now)))


def barrier(name: str) -> None:
    """Wait until every process gets here (no-op for one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
