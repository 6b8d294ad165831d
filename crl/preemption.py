"""Preemption: SIGTERM, SIGUSR1 or SIGUSR2 (what Slurm sends before it stops a job: SIGTERM on
preemption, the ``--signal`` of the job, USR2 for jobs launched by submitit, near its time
limit) or a first Ctrl-C (SIGINT) asks the run to stop. A second Ctrl-C ends the process at
once: the first one restores the OS's default action of SIGINT (Python's own handler would wait
for the compiled epoch in progress to return); checkpoints are written atomically, so the last
complete one is intact.

The handler only records the signal. The training loop looks at it after every epoch (an epoch
is one compiled call and cannot be cut short), checkpoints and raises ``Preempted``, which
``python -m crl.train`` turns into exit code EXIT_PREEMPTED. The processes of a multi-process
run agree on it, so they all stop after the same epoch.
"""

from __future__ import annotations

import os
import signal
import threading

import numpy as np

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)
CTRL_C_MESSAGE = (b"crl: Ctrl-C: stopping after this epoch and its checkpoint; press Ctrl-C again "
                  b"to stop at once (the last checkpoint is kept)\n")


class Preempted(Exception):
    """The run stopped on a signal after checkpointing ``epoch``."""

    def __init__(self, epoch: int, signal_name: str, run_path: str):
        self.epoch, self.signal_name, self.run_path = epoch, signal_name, run_path
        super().__init__(f"stopped by {signal_name} after epoch {epoch}, which is "
                         f"checkpointed; continue with: python -m crl.train --resume {run_path}")


class PreemptionWatch:
    """Context manager: while active, the SIGNALS are recorded in ``received`` instead
    of ending the process. Previous handlers are restored on exit. Outside the main thread
    (where Python cannot install handlers) it watches nothing."""

    def __init__(self):
        self.received: str | None = None
        self._previous = {}

    def _record(self, signum, _frame) -> None:
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.write(2, CTRL_C_MESSAGE)  # not print: a handler may interrupt a print
        self.received = self.received or signal.Signals(signum).name

    def agreed(self) -> str | None:
        """The signal received by this or any other process of the run, or None. Every process
        calls this at the same point of the loop, so that all stop after the same epoch (Slurm
        signals the processes of a job at slightly different times)."""
        import jax

        if jax.process_count() == 1:
            return self.received
        from jax.experimental import multihost_utils

        number = signal.Signals[self.received].value if self.received else 0
        received = [int(n) for n in multihost_utils.process_allgather(np.int32(number)) if n]
        return signal.Signals(received[0]).name if received else None

    def __enter__(self) -> PreemptionWatch:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, *_) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
