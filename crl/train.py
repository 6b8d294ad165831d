"""Contrastive RL training: ``python -m crl.train --env ant_maze --depth 1024``.

The whole loop is pure functions over an explicit ``TrainState``. One epoch is one compiled call:
a ``lax.scan`` over training steps, each of which collects an unroll from every env, appends it
to the replay buffer, samples one window per env, relabels goals, shuffles, and runs SGD over
the batches (actor and temperature, then critic). Everything runs under ``shard_map`` over a
1-D device mesh: envs, replay and batches are split over devices, parameters are replicated and
gradients averaged. One device is a mesh of size one.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from brax.envs.base import State
from flax import struct
from jax.sharding import Mesh, PartitionSpec

from crl import buffer as replay
from crl import distributed, losses, runs
from crl.checkpoint import CHECKPOINT_DIR, Checkpoints, Meta, directory_size
from crl.config import Config, ConfigError, fail, parse_args
from crl.divergence import Diverged, first_non_finite
from crl.envs import get_spec
from crl.envs.base import goal_distance, split_observation
from crl.envs.wrappers import EpisodeBatch
from crl.networks.agent import Networks, Params, make_networks, sample_tanh_gaussian
from crl.preemption import Preempted, PreemptionWatch
from crl.render import render_policy
from crl.tracking import WandbRun

# Exit codes of `python -m crl.train` (2: invalid input, before anything is written).
EXIT_PREEMPTED = 3  # stopped by SIGTERM/SIGUSR1/SIGUSR2 after checkpointing: resume with --resume
EXIT_DIVERGED = 4  # a non-finite loss or parameter: the last good checkpoint is kept

AXIS = "data"  # the device mesh axis that envs, replay and batches are split over
EASY_RADIUS = 2.0


@struct.dataclass
class TrainState:
    params: Params  # {"actor": ..., "critic": {"sa_encoder": ..., "goal_encoder": ...}}
    log_alpha: jax.Array
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    alpha_opt: optax.OptState
    env_state: State  # leaves [num_envs, ...]
    buffer: replay.ReplayBuffer
    key: jax.Array


def compiler_options(backend: str | None, platform: str) -> dict[str, Any] | None:
    """XLA options for compiling env steps of ``backend`` on ``platform``. On a CPU, XLA's
    fusion emitters make MJX steps of the arm tasks hundreds of times slower (15 against 6,000
    steps/s at 16 envs), so MJX compiles there without them (which costs the SGD step about
    25%, hence only for MJX)."""
    return {"xla_cpu_use_fusion_emitters": False} if platform == "cpu" and backend == "mjx" \
        else None


class Trainer:
    """Builds the pure functions of one configuration and compiles them over a device mesh."""

    def __init__(self, config: Config, devices: list | None = None):
        self.config = config
        devices = devices if devices is not None else jax.devices()
        self.mesh = Mesh(np.asarray(devices), (AXIS,))
        self.num_devices = len(devices)
        for name in ("num_envs", "batch_size", "num_eval_envs"):
            if getattr(config, name) % self.num_devices:
                raise ConfigError(f"{name}={getattr(config, name)} must divide by the "
                                  f"{self.num_devices} devices")
        spec = get_spec(config.env)
        self.success_radius = spec.success_radius
        self.goal_env = spec.make(config.backend, config.maze_layout)
        self.env = EpisodeBatch(self.goal_env, config.episode_length)
        eval_spec = get_spec(config.eval_env)
        eval_goal_env = (self.goal_env if config.eval_env == config.env
                         else eval_spec.make(config.backend if eval_spec.default_backend else None))
        self.eval_env = EpisodeBatch(eval_goal_env, config.episode_length)
        self.networks: Networks = make_networks(
            state_size=self.goal_env.state_size, goal_size=self.goal_env.goal_size,
            action_size=self.goal_env.action_size, actor_depth=config.actor_depth,
            critic_depth=config.critic_depth, width=config.width, repr_dim=config.repr_dim,
            remat=config.remat, compute_dtype=jnp.dtype(config.compute_dtype))
        self.actor_optimizer = optax.adam(config.actor_lr)
        self.critic_optimizer = optax.adam(config.critic_lr)
        self.alpha_optimizer = optax.adam(config.alpha_lr)
        self.target_entropy = (config.target_entropy if config.target_entropy is not None
                               else -0.5 * self.goal_env.action_size)
        self.local_envs = config.num_envs // self.num_devices
        self.local_batch = config.batch_size // self.num_devices
        self.local_eval_envs = config.num_eval_envs // self.num_devices

    # ---------------------------------------------------------------- state and sharding
    def state_specs(self) -> TrainState:
        """Where each part of the state lives on the mesh (a prefix of TrainState)."""
        replicated, by_env = PartitionSpec(), PartitionSpec(AXIS)
        return TrainState(
            params=replicated, log_alpha=replicated, actor_opt=replicated,
            critic_opt=replicated, alpha_opt=replicated, env_state=by_env,
            buffer=replay.ReplayBuffer(data=PartitionSpec(None, AXIS),
                                       insert_position=replicated, size=replicated),
            key=replicated)

    @property
    def compiler_options(self) -> dict[str, Any] | None:
        """XLA options for compiling this trainer's functions (``timed_compile``)."""
        return compiler_options(self.config.backend, self.mesh.devices.flat[0].platform)

    def _sharded(self, fn: Callable, in_specs, out_specs, donate: bool = True) -> Callable:
        mapped = jax.shard_map(fn, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs)
        return jax.jit(mapped, donate_argnums=(0,) if donate else ())

    def init(self, key: jax.Array) -> TrainState:
        """Fresh parameters, optimiser states, envs and an empty replay buffer."""
        return self._sharded(self._init_local, PartitionSpec(), self.state_specs(),
                             donate=False)(key)

    def _init_local(self, key: jax.Array) -> TrainState:
        params_key, env_key, key = jax.random.split(key, 3)
        params = self.networks.init(params_key)
        log_alpha = jnp.zeros((), jnp.float32)
        env_keys = jax.random.split(self._local_key(env_key), self.local_envs)
        env_state = self._per_device(self.env.reset(env_keys))
        example = self._transition(env_state, jnp.zeros((self.local_envs,
                                                         self.goal_env.action_size)))
        return TrainState(
            params=params, log_alpha=log_alpha,
            actor_opt=self.actor_optimizer.init(params["actor"]),
            critic_opt=self.critic_optimizer.init(params["critic"]),
            alpha_opt=self.alpha_optimizer.init(log_alpha),
            env_state=env_state,
            buffer=replay.init_buffer(example, self.config.max_replay_size),
            key=key)

    @staticmethod
    def _per_device(tree: Any) -> Any:
        """Type every leaf as differing between devices. An env reset can leave some leaves
        (a constant reward, say) typed device-invariant, and a scan carry must keep its type."""
        def cast(x):
            try:
                return jax.lax.pcast(x, (AXIS,), to="varying")
            except ValueError:  # already per-device
                return x
        return jax.tree.map(cast, tree)

    @staticmethod
    def _local_key(key: jax.Array) -> jax.Array:
        """A key that differs between devices (for what each device does with its own envs)."""
        return jax.random.fold_in(key, jax.lax.axis_index(AXIS))

    # ---------------------------------------------------------------- acting
    def _transition(self, env_state: State, action: jax.Array) -> dict[str, jax.Array]:
        state, _ = split_observation(env_state.obs, self.goal_env.state_size)
        return {"state": state, "action": action, "traj_id": env_state.info["traj_id"]}

    def _act(self, actor_params: Params, obs: jax.Array, key: jax.Array | None) -> jax.Array:
        """Stochastic action, or the deterministic tanh(mean) when ``key`` is None."""
        state, goal = split_observation(obs, self.goal_env.state_size)
        mean, log_std = self.networks.policy(actor_params, state, goal)
        return jnp.tanh(mean) if key is None else sample_tanh_gaussian(key, mean, log_std)[0]

    def _collect(self, actor_params: Params, env_state: State,
                 key: jax.Array) -> tuple[State, dict[str, jax.Array]]:
        """``unroll_length`` steps of every local env: transitions ``[T, local_envs, ...]``."""
        def env_step(env_state, step_key):
            action = self._act(actor_params, env_state.obs, step_key)
            return self.env.step(env_state, action), self._transition(env_state, action)

        keys = jax.random.split(key, self.config.unroll_length)
        return jax.lax.scan(env_step, env_state, keys)

    def _collect_and_insert(self, state: TrainState) -> TrainState:
        key, collect_key = jax.random.split(state.key)
        env_state, transitions = self._collect(state.params["actor"], state.env_state,
                                               self._local_key(collect_key))
        return state.replace(env_state=env_state, buffer=replay.insert(state.buffer, transitions),
                             key=key)

    # ---------------------------------------------------------------- learning
    def _sgd_step(self, state: TrainState, batch: dict[str, jax.Array],
                  key: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
        """Actor and temperature update, and critic update, on one batch split over devices.

        All three losses are taken at the parameters before the step, so the order of the
        updates does not matter. The critic's goal representations psi(g) serve the actor's
        Q-values too: the goal encoder runs once per step, not twice.
        Every loss is averaged over the device axis before differentiation, so the gradients
        of the (replicated) parameters are those of the global batch on every device.
        """
        cfg, nets = self.config, self.networks
        params = state.params
        # The actor's noise is drawn for the global batch and sliced, so a run's numbers do
        # not depend on how many devices share the batch.
        noise = jax.random.normal(key, (cfg.batch_size, nets.action_size))
        noise = jax.lax.dynamic_slice_in_dim(noise, jax.lax.axis_index(AXIS) * self.local_batch,
                                             self.local_batch)
        alpha = jnp.exp(state.log_alpha)

        def critic_objective(critic_params):
            phi = nets.encode_state_action(critic_params, batch["state"], batch["action"])
            psi = nets.encode_goal(critic_params, batch["goal"])
            # Contrast against the global batch: every device sees all representations.
            loss, metrics = losses.critic_loss(
                cfg.energy, cfg.contrastive_loss, cfg.logsumexp_penalty,
                jax.lax.all_gather(phi, AXIS, tiled=True),
                jax.lax.all_gather(psi, AXIS, tiled=True))
            return jax.lax.pmean(loss, AXIS), (metrics, psi)

        (_, (critic_metrics, psi)), critic_grads = jax.value_and_grad(
            critic_objective, has_aux=True)(params["critic"])

        def actor_objective(actor_params):
            mean, log_std = nets.policy(actor_params, batch["state"], batch["goal"])
            pre_tanh = mean + jnp.exp(log_std) * noise
            log_prob = losses.tanh_gaussian_log_prob(pre_tanh, mean, log_std)
            phi = nets.encode_state_action(params["critic"], batch["state"], jnp.tanh(pre_tanh))
            q = losses.energy_pairs(cfg.energy, phi, psi)
            return jax.lax.pmean(losses.actor_loss(alpha, log_prob, q), AXIS), log_prob

        def temperature_objective(log_alpha, log_prob):
            return jax.lax.pmean(
                losses.temperature_loss(log_alpha, log_prob, self.target_entropy), AXIS)

        (actor_loss, log_prob), actor_grads = jax.value_and_grad(
            actor_objective, has_aux=True)(params["actor"])
        alpha_loss, alpha_grad = jax.value_and_grad(temperature_objective)(state.log_alpha,
                                                                           log_prob)

        actor_updates, actor_opt = self.actor_optimizer.update(actor_grads, state.actor_opt)
        critic_updates, critic_opt = self.critic_optimizer.update(critic_grads,
                                                                  state.critic_opt)
        alpha_update, alpha_opt = self.alpha_optimizer.update(alpha_grad, state.alpha_opt)
        state = state.replace(
            params={"actor": optax.apply_updates(params["actor"], actor_updates),
                    "critic": optax.apply_updates(params["critic"], critic_updates)},
            log_alpha=optax.apply_updates(state.log_alpha, alpha_update),
            actor_opt=actor_opt, critic_opt=critic_opt, alpha_opt=alpha_opt)
        metrics = {
            "actor_loss": actor_loss, "alpha_loss": alpha_loss, "alpha": alpha,
            "entropy": -jnp.mean(log_prob), **critic_metrics,
        }
        return state, jax.lax.pmean(metrics, AXIS)

    def _training_step(self, state: TrainState, _: None) -> tuple[TrainState, dict]:
        cfg = self.config
        state = self._collect_and_insert(state)
        key, window_key, relabel_key, shuffle_key, sgd_key = jax.random.split(state.key, 5)
        rows = replay.sample_windows(state.buffer, self._local_key(window_key),
                                     cfg.episode_length)
        traj_id = state.buffer.data["traj_id"][rows, jnp.arange(self.local_envs)[:, None]]
        goal_steps = replay.relabel(self._local_key(relabel_key), traj_id, cfg.discount)
        batches = replay.sample_batches(self._local_key(shuffle_key), state.buffer, rows,
                                        goal_steps, self.goal_env.goal_indices,
                                        self.local_batch, cfg.num_sgd_batches_per_training_step)
        state, metrics = self._sgd_steps(state.replace(key=key), batches, sgd_key)
        return state, jax.tree.map(jnp.mean, metrics)

    def _sgd_steps(self, state: TrainState, batches: dict[str, jax.Array],
                   key: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
        """One SGD step per leading index of ``batches``; metrics ``[num_batches]``."""
        num_batches = jax.tree.leaves(batches)[0].shape[0]

        def sgd(state, batch_and_key):
            return self._sgd_step(state, *batch_and_key)

        return jax.lax.scan(sgd, state, (batches, jax.random.split(key, num_batches)))

    # ---------------------------------------------------------------- compiled entry points
    @functools.cached_property
    def prefill(self) -> Callable[[TrainState], TrainState]:
        """Fill the replay buffer with ``min_replay_size`` steps per env (rounded up to whole
        unrolls) from the initial policy."""
        def prefill_local(state):
            def unroll(state, _):
                return self._collect_and_insert(state), None
            return jax.lax.scan(unroll, state, None, self.config.prefill_unrolls)[0]

        specs = self.state_specs()
        return self._sharded(prefill_local, (specs,), specs)

    @functools.cached_property
    def train_epoch(self) -> Callable[[TrainState], tuple[TrainState, dict]]:
        """``training_steps_per_epoch`` training steps; metrics averaged over the epoch."""
        def epoch_local(state):
            state, metrics = jax.lax.scan(self._training_step, state, None,
                                          self.config.training_steps_per_epoch)
            return state, jax.tree.map(jnp.mean, metrics)

        specs = self.state_specs()
        return self._sharded(epoch_local, (specs,), (specs, PartitionSpec()))

    @functools.cached_property
    def sgd_steps(self) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
        """SGD on given global batches (leaves ``[num_batches, batch_size, ...]``, split over
        devices along the batch axis), without collecting or sampling: the update alone, for
        benchmarks and for checking that device count does not change the numbers."""
        specs = self.state_specs()
        return self._sharded(self._sgd_steps, (specs, PartitionSpec(None, AXIS), PartitionSpec()),
                             (specs, PartitionSpec()))

    @functools.cached_property
    def evaluate(self) -> Callable[[Params, jax.Array], dict[str, jax.Array]]:
        """One episode on each of ``num_eval_envs`` fresh envs with the deterministic actor."""
        def evaluate_local(actor_params, key):
            env = self.eval_env
            env_state = env.reset(jax.random.split(self._local_key(key), self.local_eval_envs))
            state_size, goal_indices = env.state_size, env.goal_indices

            def step(carry, _):
                env_state, alive = carry
                distance = goal_distance(env_state.obs, state_size, goal_indices)
                next_state = env.step(env_state, self._act(actor_params, env_state.obs, None))
                return ((next_state, alive & ~next_state.info["terminated"]),
                        (distance, alive))

            alive = jnp.ones(self.local_eval_envs, bool)
            carry = self._per_device((env_state, alive))
            _, (distance, alive) = jax.lax.scan(step, carry, None,
                                                self.config.episode_length)
            at_goal = (distance < self.success_radius) & alive
            steps_alive = jnp.maximum(jnp.sum(alive, 0), 1)
            metrics = {
                "eval/success": jnp.mean(jnp.sum(at_goal, 0)),
                "eval/success_any": jnp.mean(jnp.any(at_goal, 0)),
                "eval/success_easy": jnp.mean(jnp.sum((distance < EASY_RADIUS) & alive, 0)),
                "eval/dist": jnp.mean(jnp.sum(distance * alive, 0) / steps_alive),
                "eval/episode_length": jnp.mean(jnp.sum(alive, 0)),
            }
            return jax.lax.pmean(jax.tree.map(lambda x: x.astype(jnp.float32), metrics), AXIS)

        return self._sharded(evaluate_local, (PartitionSpec(), PartitionSpec()),
                             PartitionSpec(), donate=False)


def timed_compile(fn: Callable, *args,
                  compiler_options: dict[str, Any] | None = None) -> tuple[Callable, float]:
    """Compile ``fn`` for ``args`` ahead of time; return the executable and seconds taken."""
    start = time.perf_counter()
    compiled = fn.lower(*args).compile(compiler_options=compiler_options)
    return compiled, time.perf_counter() - start


def enable_compile_cache(directory: str) -> None:
    if directory:
        jax.config.update("jax_compilation_cache_dir", str(Path(directory).expanduser()))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def evaluation_key(config: Config, epoch: int) -> jax.Array:
    """The key of the evaluation after ``epoch``: a function of the seed and the epoch only, so
    that a resumed run and ``crl.evaluate`` see the episodes the run saw."""
    return jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), epoch)


class _RunRecord:
    """Where a run's progress goes: metrics.jsonl, the console and wandb (from process 0), and
    checkpoints (every process writes its shards)."""

    def __init__(self, path: Path, config: Config, checkpoints: Checkpoints,
                 history: list[dict], last_checkpoint: int | None, main_process: bool,
                 log: Callable[[str], None]):
        self.path, self.config, self.checkpoints = path, config, checkpoints
        self.history, self.last_checkpoint, self.log = history, last_checkpoint, log
        self.main_process, self.saved_once = main_process, False
        self.wandb = WandbRun(path, config, history) if config.wandb and main_process else None
        self.progress: runs.Progress | None = None

    def metrics(self, metrics: dict[str, Any]) -> None:
        self.history.append(metrics)
        if self.main_process:
            runs.append_metrics(self.path, metrics)
            if self.progress:
                self.progress.update(metrics["epoch"], metrics["env_steps"], metrics)
        if self.wandb:
            self.wandb.log(metrics)

    def checkpoint(self, state: TrainState, epoch: int, env_steps: int) -> None:
        meta = Meta(epoch=epoch, env_steps=env_steps, has_buffer=self.config.checkpoint_buffer,
                    config=dataclasses.asdict(self.config))
        seconds = self.checkpoints.save(state, meta)
        if not self.saved_once and self.main_process:
            size = directory_size(self.checkpoints.directory / str(epoch))
            self.log(f"checkpoint of epoch {epoch}: {size / 2**20:.1f} MiB written in "
                     f"{seconds:.1f}s to {self.checkpoints.directory}")
        self.last_checkpoint, self.saved_once = epoch, True

    def close(self, error: BaseException | None) -> None:
        self.checkpoints.close()
        if self.wandb:
            self.wandb.finish(preempted=isinstance(error, Preempted),
                              failed=error is not None and not isinstance(error, Preempted))


def _open_run(config: Config, path: Path, resume: bool, trainer: Trainer, main_process: bool,
              log: Callable[[str], None]) -> tuple[TrainState, Meta | None, _RunRecord]:
    """A new run directory and state, or the state of the latest checkpoint of ``path``."""
    if resume:
        if not (path / runs.CONFIG_FILE).is_file():
            raise runs.RunError(f"no run to resume at {path}: {path / runs.CONFIG_FILE} does not "
                                "exist")
        if not (path / CHECKPOINT_DIR).is_dir():
            raise runs.RunError(f"{path} has no checkpoints: nothing to resume")
        checkpoints = Checkpoints(path, keep=config.keep_checkpoints)
        state, meta = checkpoints.restore_latest(trainer, log)
        if meta.epoch >= config.num_epochs:
            checkpoints.close()
            raise runs.RunError(f"{path} has finished its {config.num_epochs} epochs; to train "
                                f"it longer, resume with --num-epochs N (N > {meta.epoch})")
        history = runs.metrics_until(path, meta.epoch)
    else:
        state, meta, history = trainer.init(jax.random.PRNGKey(config.seed)), None, []
        # Every process has checked before any creates: they all agree whether it is new.
        distributed.barrier("run directory checked")
        if main_process:
            runs.create_run(path, config)
        distributed.barrier("run directory created")
        checkpoints = Checkpoints(path, keep=config.keep_checkpoints)
        log(f"run directory: {path}")
    try:
        record = _RunRecord(path, config, checkpoints, history, meta.epoch if meta else None,
                            main_process, log)
    except Exception as error:  # wandb could not start (no account, no network, ...)
        checkpoints.close()
        if not resume:
            shutil.rmtree(path)  # created above, holds nothing yet
        raise runs.RunError(f"wandb: {str(error).strip().splitlines()[0]}") from error
    if resume:
        if main_process:  # only now that everything has started: later epochs are redone
            runs.write_metrics(path, history)
            runs.write_config(path, config)
        log(f"resuming {path} after epoch {meta.epoch} ({meta.env_steps:,} env steps)")
    return state, meta, record


def train(config: Config, log: Callable[[str], None] = print,
          resume: bool = False) -> tuple[TrainState, list[dict]]:
    """Run a whole (validated, resolved) configuration and write its run directory; with
    ``resume``, continue the run in that directory from its latest checkpoint.

    Every process of a multi-process run calls this; process 0 alone writes the run's files,
    the console and wandb, and each process writes its shards of the checkpoints. Returns the
    final state and every epoch's metrics. Raises Preempted (after a checkpoint) on SIGTERM,
    SIGUSR1 or SIGUSR2, and Diverged on a non-finite loss or parameter.
    """
    distributed.initialize(config)
    main_process = distributed.is_main_process()
    if not main_process:
        log = lambda _: None
    if config.run_name is None:
        config = dataclasses.replace(
            config, run_name=runs.default_run_name(config, distributed.shared_timestamp()))
    path = runs.run_path(config)
    if not resume:
        runs.check_new_run(path)
    enable_compile_cache(config.compile_cache)
    with PreemptionWatch() as watch:  # from the start: a signal while compiling is kept too
        trainer = Trainer(config)
        state, meta, record = _open_run(config, path, resume, trainer, main_process, log)
        error = None
        try:
            state = _train_epochs(trainer, state, meta, record, watch, log)
        except BaseException as raised:
            error = raised
            raise
        finally:
            record.close(error)
    return state, record.history


def _train_epochs(trainer: Trainer, state: TrainState, meta: Meta | None, record: _RunRecord,
                  watch: PreemptionWatch, log: Callable[[str], None]) -> TrainState:
    config, path = trainer.config, record.path
    log(f"{config.env}: {config.num_envs} envs on {trainer.num_devices} device(s), "
        f"{config.training_steps_per_epoch} training steps x "
        f"{config.sgd_batches_per_training_step} SGD batches per epoch, "
        f"{config.num_epochs} epochs")
    fill_buffer = meta is None or not meta.has_buffer
    options = trainer.compiler_options
    if fill_buffer:
        prefill, prefill_compile_s = timed_compile(trainer.prefill, state,
                                                   compiler_options=options)
    train_epoch, epoch_compile_s = timed_compile(trainer.train_epoch, state,
                                                 compiler_options=options)
    evaluate, eval_compile_s = timed_compile(trainer.evaluate, state.params["actor"],
                                             evaluation_key(config, 0), compiler_options=options)
    log(f"compiled in {epoch_compile_s + eval_compile_s:.1f}s plus "
        f"{prefill_compile_s if fill_buffer else 0:.1f}s for the prefill "
        f"(training epoch {epoch_compile_s:.1f}s)")

    prefill_steps = config.prefill_unrolls * config.unroll_length * config.num_envs
    if fill_buffer:
        start = time.perf_counter()
        state = prefill(state)
        jax.block_until_ready(state)
        prefill_s = time.perf_counter() - start
    if meta is None:
        epoch, env_steps = 0, prefill_steps
        # Epoch 0: the initial policy, the baseline of every learning curve.
        initial = jax.device_get(evaluate(state.params["actor"], evaluation_key(config, 0)))
        record.metrics({"epoch": 0, "env_steps": env_steps,
                        **{k: float(v) for k, v in initial.items()},
                        "time/compile_epoch_s": epoch_compile_s,
                        "time/compile_prefill_s": prefill_compile_s,
                        "time/compile_eval_s": eval_compile_s, "time/prefill_s": prefill_s})
        log(f"initial policy: eval/success={initial['eval/success']:.3g} "
            f"eval/success_any={initial['eval/success_any']:.3g}")
        record.checkpoint(state, 0, env_steps)
    else:
        epoch, env_steps = meta.epoch, meta.env_steps
        if fill_buffer:
            env_steps += prefill_steps
            log(f"the checkpoint has no replay buffer: refilled it with {prefill_steps:,} env "
                "steps of the current policy (the run is no longer an exact continuation)")

    record.progress = runs.Progress(config.num_epochs, epoch, env_steps)
    epoch_steps = config.training_steps_per_epoch * config.env_steps_per_training_step
    stop = watch.agreed()
    while stop is None and epoch < config.num_epochs:
        epoch += 1
        start = time.perf_counter()
        state, train_metrics = train_epoch(state)
        train_metrics = {f"train/{k}": float(v) for k, v in jax.device_get(train_metrics).items()}
        train_s = time.perf_counter() - start
        non_finite = first_non_finite(train_metrics, {"params": state.params,
                                                      "log_alpha": state.log_alpha})
        if non_finite:
            raise Diverged(epoch, non_finite, record.last_checkpoint)
        start = time.perf_counter()
        eval_metrics = jax.device_get(evaluate(state.params["actor"],
                                               evaluation_key(config, epoch)))
        eval_s = time.perf_counter() - start
        env_steps += epoch_steps
        record.metrics({
            "epoch": epoch, "env_steps": env_steps, **train_metrics,
            **{k: float(v) for k, v in eval_metrics.items()},
            "time/epoch_s": train_s, "time/eval_s": eval_s,
            "time/env_steps_per_s": epoch_steps / train_s,
            "time/sgd_steps_per_s": (config.training_steps_per_epoch
                                     * config.sgd_batches_per_training_step / train_s),
        })
        stop = watch.agreed()
        if epoch % config.checkpoint_every == 0 or epoch == config.num_epochs or stop:
            record.checkpoint(state, epoch, env_steps)
    if stop:
        if record.last_checkpoint != epoch:
            record.checkpoint(state, epoch, env_steps)
        raise Preempted(epoch, stop, str(path))
    if config.render and record.main_process:
        try:
            render_policy(trainer, state.params["actor"], path / "render", epoch,
                          evaluation_key(config, epoch), log=log)
        except Exception as error:  # the run is saved; a picture is not worth failing it
            log(f"rendering failed ({type(error).__name__}: {error}); retry with: "
                f"python -m crl.render {path}")
    return state


def main(argv: list[str] | None = None) -> Any:
    argv = list(sys.argv[1:] if argv is None else argv)
    resume = _pop_option(argv, "--resume")
    try:
        config = parse_args(argv) if resume is None else runs.resume_config(Path(resume), argv)
        train(config, resume=resume is not None)
    except (ConfigError, FileExistsError, runs.RunError) as error:
        fail(str(error))
    except Preempted as stop:
        if distributed.is_main_process():
            print(f"crl: {stop}", file=sys.stderr)
        raise SystemExit(EXIT_PREEMPTED) from None
    except Diverged as diverged:
        if distributed.is_main_process():
            print(f"crl: error: {diverged}", file=sys.stderr)
        raise SystemExit(EXIT_DIVERGED) from None


def _pop_option(argv: list[str], flag: str) -> str | None:
    """Remove ``flag VALUE`` or ``flag=VALUE`` from ``argv``; return VALUE."""
    for at, arg in enumerate(argv):
        if arg.startswith(flag + "="):
            del argv[at]
            return arg.split("=", 1)[1]
        if arg == flag:
            if at + 1 >= len(argv):
                fail(f"{flag} needs a run directory, e.g. {flag} runs/<name>")
            value = argv[at + 1]
            del argv[at:at + 2]
            return value
    return None


if __name__ == "__main__":
    main()
