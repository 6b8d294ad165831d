"""Checkpoints of the whole training state, with Orbax, in ``<run>/checkpoints/<epoch>/``.

A checkpoint holds four items:

- ``params``: the agent's parameters (all that evaluation, rendering and ``load_run`` read),
- ``state``: the rest of the TrainState but the buffer (the rest of the agent's state, such as
  optimiser states, a temperature or target networks; env states; the RNG key),
- ``buffer``: the replay buffer (left out with ``--no-checkpoint-buffer``),
- ``meta``: JSON with the epoch, the env steps so far and the configuration.

Orbax writes a checkpoint into a temporary directory and renames it when every item is written,
so a process killed mid-write leaves the earlier checkpoints as they were (its temporary
directory is removed when the run is resumed). Arrays are written by each process for its own
shards and restored straight into the shardings of ``Trainer.state_specs()``; nothing is
gathered onto one host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec

import crl
from crl import distributed
from crl.config import Config, config_from_dict, fixed_field_refusal
from crl.runs import CHECKPOINT_DIR, RunError, first_line, write_error

UNREADABLE_DIR = "unreadable_checkpoints"


@dataclasses.dataclass(frozen=True)
class Meta:
    epoch: int
    env_steps: int
    has_buffer: bool
    config: dict[str, Any]
    crl_version: str = crl.__version__


def abstract_state(trainer, one_seed: bool = False) -> Any:
    """The TrainState of ``trainer`` as ``jax.ShapeDtypeStruct`` leaves carrying the shardings
    of ``trainer.state_specs()``: the restore target (with ``one_seed``, that of one seed of a
    --seeds group). Traces ``init``, allocates nothing."""
    shapes = trainer.init_shapes(trainer.init_key())
    if one_seed and trainer.num_seeds:
        shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), shapes)

    def place(spec: PartitionSpec, subtree: Any) -> Any:
        sharding = NamedSharding(trainer.mesh, _without_trivial_axes(spec, trainer.mesh))
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                            subtree)

    return jax.tree.map(place, trainer.state_specs(one_seed), shapes,
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def _without_trivial_axes(spec: PartitionSpec, mesh) -> PartitionSpec:
    """``spec`` without the mesh axes of size 1. They split nothing, and jax leaves them out of
    the shardings of the arrays it computes; restoring into the same shardings as a fresh run's
    state lets a resumed run reuse the fresh run's compiled functions from the cache."""
    def keep(entry):
        names = entry if isinstance(entry, tuple) else (entry,)
        kept = tuple(name for name in names if name is not None and mesh.shape[name] > 1)
        return kept if len(kept) > 1 else (kept[0] if kept else None)

    return PartitionSpec(*(keep(entry) for entry in spec))


def abstract_params(trainer) -> Any:
    """The parameters of ``trainer.agent``, replicated over its mesh, as restore target."""
    shapes = jax.eval_shape(lambda key: trainer.agent.init(key).params, jax.random.PRNGKey(0))
    replicated = NamedSharding(trainer.mesh, PartitionSpec())
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                        shapes)


def _zeros(abstract: Any) -> Any:
    """Arrays of zeros (an empty replay buffer) shaped and placed like ``abstract``."""
    return jax.jit(lambda: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), abstract),
                   out_shardings=jax.tree.map(lambda x: x.sharding, abstract))()


def _is_empty(x: Any) -> bool:
    return math.prod(x.shape) == 0


def without_empty_arrays(tree: Any) -> Any:
    """``tree`` with its zero-size arrays left out (None): Orbax refuses to save them, and MJX's
    physics state has some (actuator activations of a model without any, for instance)."""
    return jax.tree.map(lambda x: None if _is_empty(x) else x, tree)


def with_empty_arrays(restored: Any, abstract: Any) -> Any:
    """The inverse of ``without_empty_arrays``: ``restored`` with zero-size arrays put back where
    ``abstract`` (``jax.ShapeDtypeStruct`` leaves with shardings) has them."""
    kept = iter(jax.tree.leaves(restored))
    leaves, treedef = jax.tree.flatten(abstract)
    empty = iter(_zeros([x for x in leaves if _is_empty(x)]))
    return treedef.unflatten([next(empty) if _is_empty(x) else next(kept) for x in leaves])


def _without_params(state: Any) -> Any:
    """A TrainState without the agent's parameters and the buffer (the checkpoint's ``state``)."""
    return state.replace(agent=state.agent.replace(params=None), buffer=None)


def directory_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


@contextlib.contextmanager
def _orbax_quiet():
    """Orbax logs a failed write's traceback from each of its writing threads, asyncio those of
    its tasks, and TensorStore's callbacks report errors of Orbax's event loops, closed by then;
    the error the save raises is what crl reports (in one line), so that noise is held back.
    After a failed save it stays held back: the threads and callbacks go on while the run ends."""
    loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
    levels, previous = [logger.level for logger in loggers], sys.unraisablehook

    def hook(unraisable):
        if not (isinstance(unraisable.exc_value, RuntimeError)
                and str(unraisable.exc_value) == "Event loop is closed"):
            previous(unraisable)

    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    sys.unraisablehook = hook
    yield  # a failed save raises here, and leaves the noise held back
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)
    sys.unraisablehook = previous


# errno values of failures that say nothing about the checkpoint's bytes.
_TRANSIENT_ERRNOS = {errno.ENOMEM, errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.ETIMEDOUT,
                     errno.ESTALE, errno.ECONNRESET, errno.ECONNREFUSED, errno.EMFILE,
                     errno.ENFILE, errno.EHOSTUNREACH, errno.ENETUNREACH}
_TRANSIENT_WORDS = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "DEADLINE_EXCEEDED",
                    "UNAVAILABLE", "Resource temporarily unavailable")


def _causes(error: BaseException):
    """``error`` and the exceptions it was raised from or during."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _os_error(error: BaseException) -> OSError | None:
    """The OSError behind ``error`` (Orbax and TensorStore wrap them), if any."""
    for cause in _causes(error):
        if isinstance(cause, OSError) and not isinstance(cause, FileNotFoundError):
            return cause
    text = str(error)
    for code in (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG, errno.EACCES):
        if os.strerror(code) in text:
            return OSError(code, os.strerror(code))
    return None


def _is_damage(error: BaseException) -> bool:
    """Whether a failed restore shows the checkpoint itself is bad, rather than a lack of
    memory or a transient I/O error (after which the same checkpoint may load fine)."""
    for cause in _causes(error):
        if isinstance(cause, MemoryError):
            return False
        if isinstance(cause, OSError) and cause.errno in _TRANSIENT_ERRNOS:
            return False
        if any(word in str(cause) for word in _TRANSIENT_WORDS):
            return False
    return True


class Checkpoints:
    """The checkpoints of one run directory, by epoch.

    ``keep``: how many recent checkpoints to keep; None opens them for reading only (loading,
    evaluation): nothing is then created, cleaned or deleted.
    """

    def __init__(self, run_path: Path, keep: int | None = None):
        self.run_path = Path(run_path)
        self.directory = self.run_path / CHECKPOINT_DIR
        self.writable = keep is not None
        if not self.writable and not self.directory.is_dir():
            raise RunError(f"{self.run_path} has no checkpoints ({self.directory} does not "
                           "exist)")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=self.writable,
            # Temporary directories are what a killed save leaves behind.
            cleanup_tmp_directories=self.writable,
            # Synchronous: the state is donated to the next epoch as soon as save returns.
            enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(self.directory.absolute(), options=options)

    def epochs(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_epoch(self) -> int:
        epochs = self.epochs()
        if not epochs:
            raise RunError(f"{self.run_path} has no complete checkpoint in {self.directory}")
        return epochs[-1]

    def save(self, state: Any, meta: Meta) -> float:
        """Write ``state`` (a TrainState) as the checkpoint of ``meta.epoch``; return seconds."""
        assert self.writable, "checkpoints opened for reading"
        start = time.perf_counter()
        items = {
            "params": ocp.args.StandardSave(state.agent.params),
            "state": ocp.args.StandardSave(without_empty_arrays(_without_params(state))),
            "meta": ocp.args.JsonSave(dataclasses.asdict(meta)),
        }
        if meta.has_buffer:
            items["buffer"] = ocp.args.StandardSave(state.buffer)
        try:
            with _orbax_quiet():
                self.manager.save(meta.epoch, args=ocp.args.Composite(**items), force=True)
                self.manager.wait_until_finished()
        except Exception as error:
            os_error = _os_error(error)
            if os_error is None:
                raise
            self._remove_partial(meta.epoch)
            raise write_error(self.directory / str(meta.epoch), os_error) from None
        return time.perf_counter() - start

    def _remove_partial(self, epoch: int) -> None:
        """Remove what a failed save of ``epoch`` wrote: it takes space the user now needs. The
        earlier checkpoints are complete and stay (Orbax deletes old checkpoints only after a
        save succeeds). Writes of other items may still be in flight when the first one fails:
        wait for them, then remove."""
        with contextlib.suppress(Exception):
            self.manager.wait_until_finished()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            partial = list(self.directory.glob(f"{epoch}.orbax-checkpoint-tmp*"))
            if not partial:
                return
            for path in partial:
                shutil.rmtree(path, ignore_errors=True)
            time.sleep(0.2)

    def meta(self, epoch: int) -> Meta:
        restored = self.manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return Meta(**restored.meta)

    def restore_params(self, trainer, epoch: int | None = None) -> tuple[Any, Meta]:
        """The parameters saved at ``epoch`` (default: the latest), placed on trainer's mesh."""
        epoch = self.latest_epoch() if epoch is None else self._existing(epoch)
        restored = self.manager.restore(epoch, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_params(trainer)),
            meta=ocp.args.JsonRestore()))
        return restored.params, Meta(**restored.meta)

    def restore(self, trainer, epoch: int, seed_config: Config | None = None) -> tuple[Any, Meta]:
        """The whole TrainState saved at ``epoch``, in the shardings of trainer's mesh (without
        a saved buffer, with an empty one). Refuses a checkpoint whose shapes (or env, seed)
        differ from trainer's configuration, naming the fields. With ``seed_config``, the
        checkpoint is that of one seed of trainer's --seeds group."""
        meta = self.meta(epoch)
        self.check_compatible(meta, seed_config or trainer.config)
        target = abstract_state(trainer, one_seed=seed_config is not None)
        rest = _without_params(target)
        items = {
            "params": ocp.args.StandardRestore(target.agent.params),
            "state": ocp.args.StandardRestore(without_empty_arrays(rest)),
        }
        if meta.has_buffer:
            items["buffer"] = ocp.args.StandardRestore(target.buffer)
        restored = self.manager.restore(epoch, args=ocp.args.Composite(**items))
        buffer = restored.buffer if meta.has_buffer else _zeros(target.buffer)
        state = with_empty_arrays(restored.state, rest)
        return state.replace(agent=state.agent.replace(params=restored.params),
                             buffer=buffer), meta

    def restore_latest(self, trainer, log=print,
                       seed_config: Config | None = None) -> tuple[Any, Meta]:
        """``restore`` the latest readable checkpoint. Unreadable later ones (a damaged disk, a
        file deleted by hand) are moved to ``<run>/unreadable_checkpoints/``, never deleted."""
        epochs = self.epochs()
        if not epochs:
            raise RunError(f"{self.run_path} has no complete checkpoint in {self.directory}: "
                           "nothing to resume (a run is first checkpointed after its prefill)")
        unreadable = []
        for epoch in reversed(epochs):
            try:
                result = self.restore(trainer, epoch, seed_config)
            except RunError:
                raise
            except Exception as error:
                reason = first_line(error)
                if not _is_damage(error):  # the checkpoint may be fine: leave it as it is
                    raise RunError(
                        f"checkpoint {epoch} of {self.run_path} could not be loaded "
                        f"({type(error).__name__}: {reason[:200]}), which does not show it is "
                        "damaged; it was left in place: try again (with more free memory)"
                    ) from None
                # Damaged (a lost file, bad data): try the checkpoint before.
                log(f"checkpoint {epoch} is unreadable ({type(error).__name__}: {reason[:200]})")
                unreadable.append(epoch)
                continue
            self._set_aside(unreadable)
            return result
        raise RunError(f"no checkpoint of {self.run_path} is readable (epochs "
                       f"{', '.join(map(str, epochs))}); nothing was changed")

    @staticmethod
    def check_compatible(meta: Meta, config: Config) -> None:
        refusal = fixed_field_refusal(config_from_dict(meta.config), config)
        if refusal:
            raise RunError(refusal)

    def _existing(self, epoch: int) -> int:
        if epoch not in self.epochs():
            raise RunError(f"{self.run_path} has no checkpoint of epoch {epoch}; it has "
                           f"{', '.join(map(str, self.epochs())) or 'none'}")
        return epoch

    def _set_aside(self, epochs: list[int]) -> None:
        if not epochs:
            return
        if distributed.is_main_process():
            aside = self.run_path / UNREADABLE_DIR
            aside.mkdir(exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for epoch in epochs:
                shutil.move(self.directory / str(epoch), aside / f"{epoch}-{stamp}")
        distributed.barrier("unreadable checkpoints set aside")
        self.manager.reload()

    def close(self) -> None:
        self.manager.close()
