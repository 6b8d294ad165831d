"""Training: ``python -m crl.train --env ant_maze --depth 1024 [--agent sac --her]``.

The runner knows no algorithm: an agent (crl/agents/) says what its state is, how it acts, what
its batches hold and how it updates on one. The whole loop is pure functions over an explicit
``TrainState``. One epoch is one compiled call: a ``lax.scan`` over training steps, each of which
collects an unroll from every env with the agent's policy, appends it to the replay buffer,
samples batches as the agent asks (windows, hindsight goals, shuffling) and runs the agent's
update on each. Everything runs under ``shard_map`` over a 1-D device mesh: envs, replay and
batches are split over devices, the agent's state is replicated and its gradients averaged. One
device is a mesh of size one. With ``--seeds`` every function is ``vmap``ped over a leading
seed axis of the whole state: independent runs in one program. The mesh is then 2-D: the seeds
are split over as many devices as divide their number (no collective crosses seeds), and each
seed's envs and batches over the rest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from brax.envs.base import State
from flax import struct
from jax.sharding import Mesh, PartitionSpec

from crl import buffer as replay
from crl import distributed, runs
from crl.agents import make_agent
from crl.agents.base import Agent, EnvSizes, Params
from crl.checkpoint import Checkpoints, Meta, directory_size
from crl.config import (
    SEED_MARK,
    Config,
    ConfigError,
    check_device_split,
    fail,
    parse_args,
    seed_configs,
)
from crl.diagnostics import is_diagnostic
from crl.distributed import AXIS, SEED_AXIS
from crl.divergence import Diverged, SeedsDiverged, first_non_finite, first_non_finite_per_seed
from crl.envs import get_spec
from crl.envs.base import goal_distance, split_observation
from crl.envs.wrappers import EpisodeBatch
from crl.preemption import Preempted, PreemptionWatch
from crl.render import render_policy

# The exit codes of `python -m crl.train` (crl.runs: launchers read them without JAX).
from crl.runs import (
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    EXIT_OUT_OF_MEMORY,
    EXIT_PREEMPTED,
    EXIT_WRITE_FAILED,
)
from crl.tracking import WandbRun

EASY_RADIUS = 2.0


@struct.dataclass
class TrainState:
    agent: Any  # the agent's state (crl/agents/): its ``params`` and everything else it keeps
    env_state: State  # leaves [num_envs, ...]
    buffer: replay.ReplayBuffer
    key: jax.Array


# XLA's cheapest CPU settings: a third of the compile time, for code several times slower and
# float32 results that differ in the last bits (sums fused in another order). For runs that
# compilation dominates (smoke runs, the test suite); set CRL_FAST_COMPILE=1 to use them.
FAST_COMPILE_ENV = "CRL_FAST_COMPILE"
FAST_COMPILE_OPTIONS = {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 0}


def compiler_options(backend: str | None, platform: str) -> dict[str, Any] | None:
    """XLA options for compiling the functions of a run of ``backend`` on ``platform``. On a
    CPU, XLA's fusion emitters make MJX steps of the arm tasks hundreds of times slower (15
    against 6,000 steps/s at 16 envs), so MJX compiles there without them (which costs the SGD
    step about 25%, hence only for MJX); with CRL_FAST_COMPILE=1 every run on a CPU compiles
    with FAST_COMPILE_OPTIONS."""
    if platform != "cpu":
        return None
    if os.environ.get(FAST_COMPILE_ENV) == "1":
        return dict(FAST_COMPILE_OPTIONS)
    return {"xla_cpu_use_fusion_emitters": False} if backend == "mjx" else None


class Trainer:
    """Builds the pure functions of one configuration and compiles them over a device mesh."""

    def __init__(self, config: Config, devices: list | None = None):
        self.config = config
        devices = devices if devices is not None else jax.devices()
        self.seed_configs = seed_configs(config)
        self.num_seeds = len(config.seeds)  # 0: one run, and no seed axis
        if self.num_seeds:
            seed_devices = math.gcd(self.num_seeds, len(devices))
            self.mesh = Mesh(np.asarray(devices).reshape(seed_devices, -1), (SEED_AXIS, AXIS))
        else:
            self.mesh = Mesh(np.asarray(devices), (AXIS,))
        self.num_devices = self.mesh.shape[AXIS]  # that split one run's envs and batches
        check_device_split(config, self.num_devices)
        spec = get_spec(config.env)
        self.success_radius = spec.success_radius
        self.goal_env = spec.make(config.backend, config.maze_layout, config.maze_goal_noise)
        self.env = EpisodeBatch(self.goal_env, config.episode_length, config.reset)
        eval_goal_env = make_eval_env(config, self.goal_env)
        self.eval_env = EpisodeBatch(eval_goal_env, config.episode_length)
        sizes = EnvSizes(self.goal_env.state_size, self.goal_env.goal_size,
                         self.goal_env.action_size)
        self.agent: Agent = make_agent(config, sizes, self.num_devices)
        self.sampling = self.agent.sampling
        self.local_envs = config.num_envs // self.num_devices
        self.local_batch = config.batch_size // self.num_devices
        self.local_eval_envs = config.num_eval_envs // self.num_devices

    # ---------------------------------------------------------------- seeds
    def _over_seeds(self, fn: Callable) -> Callable:
        """``fn`` mapped over the leading seed axis of all its arguments and results (itself
        for one run)."""
        return jax.vmap(fn) if self.num_seeds else fn

    def _seed_spec(self, spec: PartitionSpec) -> PartitionSpec:
        """``spec`` of one run's array, for the same array of every seed (leading axis)."""
        return PartitionSpec(SEED_AXIS, *spec) if self.num_seeds else spec

    def seed_keys(self, key_of: Callable[[Config], jax.Array]) -> jax.Array:
        """``key_of(config)`` of the run, or stacked over the runs of --seeds."""
        if not self.num_seeds:
            return key_of(self.config)
        return jnp.stack([key_of(config) for config in self.seed_configs])

    def seed_state(self, state: TrainState, index: int) -> TrainState:
        """The state of the ``index``-th seed of a group (a group's state itself for one run),
        in the shardings of one seed's state: what its checkpoint holds."""
        if not self.num_seeds:
            return state
        return self._slice_seed(state, jnp.int32(index))

    @functools.cached_property
    def _slice_seed(self) -> Callable[[TrainState, jax.Array], TrainState]:
        from crl.checkpoint import abstract_state

        shardings = jax.tree.map(lambda x: x.sharding, abstract_state(self, one_seed=True))
        # Compiled, not eager indexing: the arrays may span the devices of several processes.
        return jax.jit(lambda state, index: jax.tree.map(lambda x: x[index], state),
                       out_shardings=shardings)

    def stack_seeds(self, states: list[TrainState]) -> TrainState:
        """The group's state of the states of its seeds, in the group's shardings."""
        from crl.checkpoint import abstract_state

        shardings = jax.tree.map(lambda x: x.sharding, abstract_state(self))
        return jax.jit(lambda states: jax.tree.map(lambda *xs: jnp.stack(xs), *states),
                       out_shardings=shardings)(states)

    # ---------------------------------------------------------------- state and sharding
    def state_specs(self, one_seed: bool = False) -> TrainState:
        """Where each part of the state lives on the mesh (a prefix of TrainState); of the
        whole group, or with ``one_seed`` of one of its seeds."""
        replicated, by_env = PartitionSpec(), PartitionSpec(AXIS)
        specs = TrainState(
            agent=replicated, env_state=by_env,
            buffer=replay.ReplayBuffer(data=PartitionSpec(None, AXIS),
                                       insert_position=replicated, size=replicated),
            key=replicated)
        return specs if one_seed else jax.tree.map(
            self._seed_spec, specs, is_leaf=lambda x: isinstance(x, PartitionSpec))

    @property
    def compiler_options(self) -> dict[str, Any] | None:
        """XLA options for compiling this trainer's functions: those of ``_sharded`` take them
        themselves, others through ``timed_compile``."""
        return compiler_options(self.config.backend, self.mesh.devices.flat[0].platform)

    def _sharded(self, fn: Callable, in_specs, out_specs, donate: bool = True) -> Callable:
        # A jit with compiler options cannot be nested in another trace: call these at the top.
        mapped = jax.shard_map(fn, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs)
        return jax.jit(mapped, donate_argnums=(0,) if donate else (),
                       compiler_options=self.compiler_options)

    def _init_mapped(self) -> Callable:
        return jax.shard_map(self._over_seeds(self._init_local), mesh=self.mesh,
                             in_specs=self._seed_spec(PartitionSpec()),
                             out_specs=self.state_specs())

    def init(self, key: jax.Array) -> TrainState:
        """Fresh parameters, optimiser states, envs and an empty replay buffer (one ``key`` per
        seed with --seeds, ``init_key`` of each)."""
        return jax.jit(self._init_mapped(), compiler_options=self.compiler_options)(key)

    def init_shapes(self, key: jax.Array) -> TrainState:
        """The shapes, dtypes and shardings of ``init(key)``, traced without compiling."""
        return jax.eval_shape(self._init_mapped(), key)

    def init_key(self) -> jax.Array:
        """The key(s) of ``init`` of a new run: from its seed."""
        return self.seed_keys(lambda config: jax.random.PRNGKey(config.seed))

    def _init_local(self, key: jax.Array) -> TrainState:
        agent_key, env_key, key = jax.random.split(key, 3)
        env_keys = jax.random.split(self._local_key(env_key), self.local_envs)
        env_state = self._per_device(self.env.reset(env_keys))
        example = self._transition(env_state, jnp.zeros((self.local_envs,
                                                         self.goal_env.action_size)))
        return TrainState(
            agent=self.agent.init(agent_key), env_state=env_state,
            buffer=replay.init_buffer(example, self.config.max_replay_size),
            key=key)

    def _per_device(self, tree: Any) -> Any:
        """Type every leaf as differing between devices. An env reset can leave some leaves
        (a constant reward, say) typed device-invariant, and a scan carry must keep its type."""
        def cast(x):
            for axis in self.mesh.axis_names:
                with contextlib.suppress(ValueError):  # already per-device
                    x = jax.lax.pcast(x, (axis,), to="varying")
            return x
        return jax.tree.map(cast, tree)

    @staticmethod
    def _local_key(key: jax.Array) -> jax.Array:
        """A key that differs between devices (for what each device does with its own envs)."""
        return jax.random.fold_in(key, jax.lax.axis_index(AXIS))

    # ---------------------------------------------------------------- acting
    def _transition(self, env_state: State, action: jax.Array) -> dict[str, jax.Array]:
        state, goal = split_observation(env_state.obs, self.goal_env.state_size)
        step = {"state": state, "action": action, "traj_id": env_state.info["traj_id"]}
        if self.sampling.stores_commanded_goal:
            step["goal"] = goal
        return step

    def act(self, params: Params, obs: jax.Array, key: jax.Array | None,
            samples: int = 1) -> jax.Array:
        """The agent's action for each observation: its deterministic one when ``key`` is
        None, else sampled, or the best under its critic of ``samples`` sampled actions."""
        state, goal = split_observation(obs, self.goal_env.state_size)
        return self.agent.select_action(params, state, goal, key, samples)

    def eval_act(self, params: Params, obs: jax.Array, key: jax.Array) -> jax.Array:
        """The evaluated policy's action (--eval-actions, --eval-stochastic)."""
        cfg = self.config
        sampled = cfg.eval_stochastic or cfg.eval_actions > 1
        return self.act(params, obs, key if sampled else None, cfg.eval_actions)

    def _collect(self, params: Params, env_state: State,
                 key: jax.Array) -> tuple[State, dict[str, jax.Array]]:
        """``unroll_length`` steps of every local env: transitions ``[T, local_envs, ...]``."""
        def env_step(env_state, step_key):
            action = self.act(params, env_state.obs, step_key, self.config.explore_actions)
            return self.env.step(env_state, action), self._transition(env_state, action)

        keys = jax.random.split(key, self.config.unroll_length)
        return jax.lax.scan(env_step, env_state, keys)

    def _collect_and_insert(self, state: TrainState) -> TrainState:
        key, collect_key = jax.random.split(state.key)
        env_state, transitions = self._collect(state.agent.params, state.env_state,
                                               self._local_key(collect_key))
        return state.replace(env_state=env_state, buffer=replay.insert(state.buffer, transitions),
                             key=key)

    # ---------------------------------------------------------------- learning
    def _sgd_step(self, state: TrainState, batch: dict[str, jax.Array],
                  key: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
        agent_state, metrics = self.agent.update(state.agent, batch, key)
        return state.replace(agent=agent_state), metrics

    def _training_step(self, state: TrainState, _: None) -> tuple[TrainState, dict]:
        cfg = self.config
        state = self._collect_and_insert(state)
        key, window_key, relabel_key, shuffle_key, sgd_key = jax.random.split(state.key, 5)
        batches = self._sample(
            tuple(self._local_key(k) for k in (window_key, relabel_key, shuffle_key)),
            state.buffer, self.local_batch, cfg.sgd_batches_per_training_step)
        state, metrics = self._sgd_steps(state.replace(key=key), batches, sgd_key)
        # The diagnostics of the epoch look at the first batch of its last training step.
        first_batch = jax.tree.map(lambda x: x[0], batches) if cfg.diagnostics else {}
        return state, (_mean_over_steps(metrics), first_batch)

    def _sample(self, keys: tuple[jax.Array, ...], buffer: replay.ReplayBuffer,
                batch_size: int, max_batches: int) -> dict[str, jax.Array]:
        return replay.sample(keys, buffer, self.sampling, window_length=self.config.episode_length,
                             goal_indices=self.goal_env.goal_indices,
                             success_radius=self.success_radius, batch_size=batch_size,
                             max_batches=max_batches)

    def _forward_health(self, state: TrainState,
                        batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """The networks' forward diagnostics on ``batch``, this device's rows of a global
        batch, gathered so that every device measures the global batch."""
        batch = jax.tree.map(lambda x: jax.lax.all_gather(x, AXIS, tiled=True), batch)
        return self.agent.forward_health(state.agent.params, batch)

    def batch_shapes(self, num_batches: int) -> dict[str, jax.ShapeDtypeStruct]:
        """The fields, shapes and dtypes of ``num_batches`` global batches of one run's update
        (no --seeds), as the replay buffer samples them: what ``sgd_steps`` takes. Traced,
        nothing allocated."""
        buffer = self.init_shapes(self.init_key()).buffer
        keys = (jax.random.PRNGKey(0),) * 3
        return jax.eval_shape(lambda buffer: self._sample(
            keys, buffer, self.config.batch_size, num_batches), buffer)

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
        return self._sharded(self._over_seeds(prefill_local), (specs,), specs)

    @functools.cached_property
    def train_epoch(self) -> Callable[[TrainState], tuple[TrainState, dict]]:
        """``training_steps_per_epoch`` training steps; metrics averaged over the epoch."""
        def epoch_local(state):
            state, (metrics, batches) = jax.lax.scan(self._training_step, state, None,
                                                     self.config.training_steps_per_epoch)
            metrics = _mean_over_steps(metrics)
            if self.config.diagnostics:
                metrics |= self._forward_health(state, jax.tree.map(lambda x: x[-1], batches))
            return state, metrics

        specs = self.state_specs()
        return self._sharded(self._over_seeds(epoch_local), (specs,),
                             (specs, self._seed_spec(PartitionSpec())))

    @functools.cached_property
    def sgd_steps(self) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
        """SGD on given global batches (leaves ``[num_batches, batch_size, ...]``, split over
        devices along the batch axis), without collecting or sampling: the update alone, for
        benchmarks and for checking that device count does not change the numbers."""
        specs = self.state_specs()
        return self._sharded(self._over_seeds(self._sgd_steps),
                             (specs, self._seed_spec(PartitionSpec(None, AXIS)),
                              self._seed_spec(PartitionSpec())),
                             (specs, self._seed_spec(PartitionSpec())))

    @functools.cached_property
    def evaluate(self) -> Callable[[Params, jax.Array], dict[str, jax.Array]]:
        """One episode on each of ``num_eval_envs`` fresh envs with the deterministic policy
        of the agent's parameters (per seed with --seeds: parameters and keys stacked)."""
        def evaluate_local(params, key):
            env = self.eval_env
            local_key = self._local_key(key)
            env_state = env.reset(jax.random.split(local_key, self.local_eval_envs))
            act_key = jax.random.fold_in(local_key, 1)  # used by a sampled evaluation only
            state_size, goal_indices = env.state_size, env.goal_indices

            def step(carry, step_key):
                env_state, alive = carry
                distance = goal_distance(env_state.obs, state_size, goal_indices)
                next_state = env.step(env_state, self.eval_act(params, env_state.obs, step_key))
                return ((next_state, alive & ~next_state.info["terminated"]),
                        (distance, alive))

            alive = jnp.ones(self.local_eval_envs, bool)
            carry = self._per_device((env_state, alive))
            _, (distance, alive) = jax.lax.scan(
                step, carry, jax.random.split(act_key, self.config.episode_length))
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

        replicated = self._seed_spec(PartitionSpec())
        return self._sharded(self._over_seeds(evaluate_local), (replicated, replicated),
                             replicated, donate=False)


def _mean_over_steps(metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Metrics ``[steps, ...]`` averaged over the steps; per-block diagnostics stay lists."""
    return jax.tree.map(lambda x: jnp.mean(x, axis=0), metrics)


def make_eval_env(config: Config, goal_env: Any) -> Any:
    """The goal env of ``config.eval_env`` (``goal_env`` itself when it is the training env).
    Refuses one whose observations are laid out differently: the policy could not read them."""
    if config.eval_env == config.env:
        return goal_env
    eval_spec = get_spec(config.eval_env)
    eval_env = eval_spec.make(config.backend if eval_spec.default_backend else None,
                              maze_goal_noise=config.maze_goal_noise if eval_spec.is_maze
                              else None)
    layout = lambda env: (env.state_size, env.goal_size, env.action_size,
                          tuple(np.asarray(env.goal_indices).tolist()))
    if layout(eval_env) != layout(goal_env):
        raise ConfigError(
            f"eval_env={config.eval_env!r} does not fit the policy of env={config.env!r}: "
            "(state size, goal size, action size, goal indices) are "
            f"{layout(eval_env)} against {layout(goal_env)}; evaluate on a variant of the "
            "training env (e.g. its _eval maze)")
    return eval_env


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
    checkpoints (every process writes its shards). A --seeds group has one per seed."""

    def __init__(self, path: Path, config: Config, checkpoints: Checkpoints,
                 history: list[dict], last_checkpoint: int | None, main_process: bool,
                 log: Callable[[str], None]):
        self.path, self.config, self.checkpoints = path, config, checkpoints
        self.history, self.last_checkpoint, self.log = history, last_checkpoint, log
        self.main_process, self.saved_once = main_process, False
        self.wandb = WandbRun(path, config, history) if config.wandb and main_process else None
        self.diverged: Diverged | None = None  # then nothing more is recorded

    def metrics(self, metrics: dict[str, Any]) -> None:
        self.history.append(metrics)
        if self.main_process:
            runs.append_metrics(self.path, metrics)
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
            failed = self.diverged is not None or (error is not None
                                                   and not isinstance(error, Preempted))
            self.wandb.finish(preempted=isinstance(error, Preempted), failed=failed)


def _resumable_seeds(config: Config, log: Callable[[str], None]) -> Config:
    """The seeds of a --seeds group to resume together: those at the group's latest checkpoint.
    A seed behind it (it diverged, or was stopped apart) is left out, with how to resume it;
    a lost run directory is an error."""
    if not config.seeds:
        return config
    paths = dict(zip(config.seeds, runs.seed_run_paths(config), strict=True))
    lost = [seed for seed, path in paths.items() if not (path / runs.CONFIG_FILE).is_file()]
    if lost:
        kept = [seed for seed in config.seeds if seed not in lost]
        hint = (f"resume the others with --resume {paths[kept[0]]} --seeds "
                f"{' '.join(map(str, kept))}" if kept else "nothing is left to resume")
        raise runs.RunError(f"{paths[lost[0]]}, the run of seed {lost[0]} of this group, is "
                            f"missing (no {runs.CONFIG_FILE}); {hint}")
    latest = {seed: (runs.checkpointed_epochs(path) or [None])[-1] for seed, path in
              paths.items()}
    epochs = [epoch for epoch in latest.values() if epoch is not None]
    if not epochs:
        return config  # none was checkpointed: the group starts from scratch
    behind = [seed for seed, epoch in latest.items() if epoch != max(epochs)]
    for seed in behind:
        log(f"seed {seed} ({paths[seed]}) is at "
            f"{'no checkpoint' if latest[seed] is None else f'epoch {latest[seed]}'}, behind "
            f"the group's epoch {max(epochs)} (it diverged or stopped apart): left out; resume "
            f"it on its own with --resume {paths[seed]} --seeds {seed}")
    return dataclasses.replace(config, seeds=tuple(s for s in config.seeds if s not in behind))


def _open_run(config: Config, resume: bool, trainer: Trainer, main_process: bool,
              log: Callable[[str], None]) -> tuple[TrainState, Meta | None, list[_RunRecord]]:
    """New run directories and state (one, or one per seed of --seeds), or the state of their
    latest checkpoints."""
    configs, paths = trainer.seed_configs, runs.seed_run_paths(config)
    group = bool(trainer.num_seeds)
    if resume and not (paths[0] / runs.CONFIG_FILE).is_file():
        raise runs.RunError(f"no run to resume at {paths[0]}: {paths[0] / runs.CONFIG_FILE} does "
                            "not exist")
    if resume and not any(runs.checkpointed_epochs(path) for path in paths):
        # Stopped before its first checkpoint (while compiling, say): nothing was trained.
        log(f"{paths[0]} stopped before its first checkpoint: starting it from scratch with its "
            "recorded configuration" + (" (and the other seeds of its group)" if group else ""))
        resume = False
    elif not resume:
        for path in paths:
            runs.check_new_run(path)
    if resume:
        checkpoints = [Checkpoints(path, keep=config.keep_checkpoints) for path in paths]
        try:
            restored = [one_checkpoints.restore_latest(trainer, log, one if group else None)
                        for one_checkpoints, one in zip(checkpoints, configs, strict=True)]
            meta = restored[0][1]
            if meta.epoch >= config.num_epochs:
                raise runs.RunError(f"{paths[0]} has finished its {config.num_epochs} epochs; to "
                                    f"train it longer, resume with --num-epochs N "
                                    f"(N > {meta.epoch})")
            if any(one_meta.epoch != meta.epoch for _, one_meta in restored):
                raise runs.RunError("the seeds' latest readable checkpoints are of different "
                                    "epochs; resume each with --seeds K")
        except BaseException:
            for one_checkpoints in checkpoints:
                one_checkpoints.close()
            raise
        state = trainer.stack_seeds([one for one, _ in restored]) if group else restored[0][0]
        histories = [runs.metrics_until(path, meta.epoch) for path in paths]
    else:
        state, meta = trainer.init(trainer.init_key()), None
        histories = [[] for _ in paths]
        # Every process has checked before any creates: they all agree whether it is new.
        distributed.barrier("run directory checked")
        if main_process:
            for path, one in zip(paths, configs, strict=True):
                runs.create_run(path, one, group=config if group else None)
        distributed.barrier("run directory created")
        checkpoints = [Checkpoints(path, keep=config.keep_checkpoints) for path in paths]
        log(f"run director{'ies' if group else 'y'}: {', '.join(map(str, paths))}")
    records: list[_RunRecord] = []
    try:
        for path, one, one_checkpoints, history in zip(paths, configs, checkpoints, histories,
                                                       strict=True):
            records.append(_RunRecord(path, one, one_checkpoints, history,
                                      meta.epoch if meta else None, main_process, log))
    except Exception as error:  # wandb could not start (no account, no network, ...)
        for one_checkpoints in checkpoints:
            one_checkpoints.close()
        if not resume and main_process:
            for path in paths:
                runs.remove_run_files(path)  # written above, they hold nothing yet
        raise runs.RunError(f"wandb: {runs.first_line(error)}") from error
    if resume:
        if main_process:  # only now that everything has started: later epochs are redone
            for record in records:
                runs.write_metrics(record.path, record.history)
                runs.write_config(record.path, record.config)
        log(f"resuming {', '.join(map(str, paths))} after epoch {meta.epoch} "
            f"({meta.env_steps:,} env steps)")
    return state, meta, records


def train(config: Config, log: Callable[[str], None] = print,
          resume: bool = False) -> tuple[TrainState, list]:
    """Run a whole (validated, resolved) configuration and write its run directory; with
    ``resume``, continue the run in that directory from its latest checkpoint. With --seeds,
    one run directory per seed, all trained in one program.

    Every process of a multi-process run calls this; process 0 alone writes the run's files,
    the console and wandb, and each process writes its shards of the checkpoints. Returns the
    final state and every epoch's metrics (with --seeds, a list of them per seed, and the state
    with a leading seed axis). Raises Preempted (after a checkpoint) on SIGTERM, SIGUSR1 or
    SIGUSR2, and Diverged on a non-finite loss or parameter (SeedsDiverged at the end, when
    some seeds of a group diverged and the others went on).
    """
    distributed.initialize(config)
    main_process = distributed.is_main_process()
    if not main_process:
        log = lambda _: None
    if config.run_name is None:
        config = dataclasses.replace(
            config, run_name=runs.default_run_name(config, distributed.shared_timestamp()))
    if config.seeds and SEED_MARK not in config.run_name:
        config = dataclasses.replace(config, run_name=config.run_name + f"_s{SEED_MARK}")
    if resume:
        config = _resumable_seeds(config, log)
    enable_compile_cache(config.compile_cache)
    trainer = Trainer(config)  # checks device splits, builds envs and networks, compiles nothing
    check_memory(trainer)
    with contextlib.ExitStack() as stack:
        # Process 0 holds the runs' locks for the whole run; the others write only checkpoint
        # shards.
        if main_process:
            for path in runs.seed_run_paths(config):
                stack.enter_context(runs.RunLock(path))
        watch = stack.enter_context(PreemptionWatch())  # a signal while compiling is kept too
        state, meta, records = _open_run(config, resume, trainer, main_process, log)
        error = None
        try:
            state = _train_epochs(trainer, state, meta, records, watch, log)
        except BaseException as raised:
            error = raised
            if is_out_of_memory(raised):
                raise OutOfMemory(out_of_memory_message(trainer, raised)) from None
            raise
        finally:
            for record in records:
                record.close(error)
    histories = [record.history for record in records]
    return state, histories if trainer.num_seeds else histories[0]


def device_memory(device: Any) -> int | None:
    """Bytes of memory a computation may use on ``device``, where the device says (GPUs, TPUs);
    None on a CPU."""
    try:
        return int((device.memory_stats() or {})["bytes_limit"])
    except (KeyError, TypeError, ValueError, NotImplementedError, RuntimeError):
        return None


class OutOfMemory(runs.RunError):
    """A device ran out of memory while compiling or training; the run directory keeps what
    was checkpointed, and --resume continues it (with options that fit)."""


def is_out_of_memory(error: BaseException) -> bool:
    text = str(error)
    return isinstance(error, MemoryError) or (
        isinstance(error, jax.errors.JaxRuntimeError)
        and ("RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()))


def out_of_memory_message(trainer: Trainer, error: BaseException) -> str:
    limit = device_memory(trainer.mesh.devices.flat[0])
    if limit is not None:
        return memory_refusal(trainer.config, trainer.mesh.devices.size, limit,
                              out_of_memory=True)
    return (f"this run ran out of memory ({type(error).__name__}: "
            f"{runs.first_line(error)[:200]}); what it checkpointed is intact: resume it with "
            "--remat blocks, a smaller --batch-size or fewer --num-envs (python -m crl.plan "
            "--gpu local prints what fits)")


def check_memory(trainer: Trainer) -> None:
    """On an accelerator (one that reports its memory), refuse before compiling a run that
    crl.plan predicts will not fit, naming the prediction and what would make it fit."""
    limit = device_memory(trainer.mesh.devices.flat[0])
    if limit is None:
        return
    message = memory_refusal(trainer.config, trainer.mesh.devices.size, limit)
    if message:
        raise ConfigError(message)


def memory_refusal(config: Config, num_devices: int, limit: float,
                   out_of_memory: bool = False) -> str | None:
    """The one-line refusal of ``config`` on devices of ``limit`` bytes, with the options that
    would fit; None if it fits (and this is no report of an actual ``out_of_memory``)."""
    from crl import plan

    device = plan.Device(limit, 1.0, 1.0, 1.0, "this device")
    predicted = plan.make_plan(config, device, num_devices, available=limit)
    if predicted.fits and not out_of_memory:
        return None
    advice = []
    if config.remat != "blocks" and plan.make_plan(dataclasses.replace(config, remat="blocks"),
                                                   device, num_devices, available=limit).fits:
        advice.append("--remat blocks")
    for field, flag in (("batch_size", "--batch-size"), ("num_envs", "--num-envs")):
        value = plan.largest(config, device, num_devices, field, config.remat, limit,
                             predicted.data_devices)
        if 0 < value < getattr(config, field):
            advice.append(f"{flag} {value}")
    per_seed = predicted.total / predicted.seeds_per_device
    seeds = int(limit // per_seed)
    if config.seeds and 0 < seeds < predicted.seeds_per_device:
        per_job = seeds * predicted.num_seeds // predicted.seeds_per_device
        advice.append(f"--seeds with at most {per_job} per job")
    hint = (f"would fit: {' or '.join(advice)}" if advice else
            "nothing smaller in one option fits: a smaller replay (--max-replay-size), "
            "depth or width, or more devices")
    what = "ran out of device memory" if out_of_memory else "will not fit"
    kept = "; what it checkpointed is intact: --resume it with such options" \
        if out_of_memory else ""
    return (f"this run {what}: crl.plan predicts {_size(predicted.total)} per device of the "
            f"{_size(limit)} available; {hint}{kept} (python -m crl.plan prints the breakdown)")


def _size(bytes_: int) -> str:
    return f"{bytes_ / 2**30:.2f} GiB" if bytes_ >= 2**30 else f"{bytes_ / 2**20:.1f} MiB"


def _seed_metrics(trainer: Trainer, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Metrics of a compiled call as floats (lists of floats per block for diagnostics), one
    dict per seed (one dict for one run)."""
    values = jax.device_get(metrics)
    host = lambda v: v.tolist() if np.ndim(v) else float(v)
    if not trainer.num_seeds:
        return [{k: host(v) for k, v in values.items()}]
    return [{k: host(v[seed]) for k, v in values.items()} for seed in range(trainer.num_seeds)]


def _mean_metrics(metrics: list[dict[str, Any]]) -> dict[str, float]:
    """The mean over seeds of each number (per-block lists are left out)."""
    return {k: float(np.mean([one[k] for one in metrics])) for k, v in metrics[0].items()
            if not isinstance(v, list)}


def _train_epochs(trainer: Trainer, state: TrainState, meta: Meta | None,
                  records: list[_RunRecord], watch: PreemptionWatch,
                  log: Callable[[str], None]) -> TrainState:
    config = trainer.config
    seed_devices = trainer.mesh.shape.get(SEED_AXIS, 1)
    group = (f", {trainer.num_seeds} seeds vectorised"
             + (f" over {seed_devices} devices" if seed_devices > 1 else "")
             if trainer.num_seeds else "")
    log(f"{config.agent}{' + HER' if config.her else ''} on {config.env}: {config.num_envs} "
        f"envs on {trainer.num_devices} device(s){group}, "
        f"{config.training_steps_per_epoch} training steps x "
        f"{config.sgd_batches_per_training_step} SGD batches per epoch, "
        f"{config.num_epochs} epochs")
    evaluation_keys = lambda epoch: trainer.seed_keys(lambda one: evaluation_key(one, epoch))
    fill_buffer = meta is None or not meta.has_buffer
    if fill_buffer:
        prefill, prefill_compile_s = timed_compile(trainer.prefill, state)
    train_epoch, epoch_compile_s = timed_compile(trainer.train_epoch, state)
    evaluate, eval_compile_s = timed_compile(trainer.evaluate, state.agent.params,
                                             evaluation_keys(0))
    log(f"compiled in {epoch_compile_s + eval_compile_s:.1f}s plus "
        f"{prefill_compile_s if fill_buffer else 0:.1f}s for the prefill "
        f"(training epoch {epoch_compile_s:.1f}s)")

    def alive() -> list[tuple[int, _RunRecord]]:
        return [(index, record) for index, record in enumerate(records) if not record.diverged]

    def checkpoint(epoch: int, env_steps: int) -> None:
        for index, record in alive():
            record.checkpoint(trainer.seed_state(state, index), epoch, env_steps)

    prefill_steps = config.prefill_unrolls * config.unroll_length * config.num_envs
    if fill_buffer:
        start = time.perf_counter()
        state = prefill(state)
        jax.block_until_ready(state)
        prefill_s = time.perf_counter() - start
    if meta is None:
        epoch, env_steps = 0, prefill_steps
        # Epoch 0: the initial policy, the baseline of every learning curve.
        initial = _seed_metrics(trainer, evaluate(state.agent.params, evaluation_keys(0)))
        for record, metrics in zip(records, initial, strict=True):
            record.metrics({"epoch": 0, "env_steps": env_steps, **metrics,
                            "time/compile_epoch_s": epoch_compile_s,
                            "time/compile_prefill_s": prefill_compile_s,
                            "time/compile_eval_s": eval_compile_s, "time/prefill_s": prefill_s})
        shown = _mean_metrics(initial)
        log(f"initial policy: eval/success={shown['eval/success']:.3g} "
            f"eval/success_any={shown['eval/success_any']:.3g}"
            + (" (mean over seeds)" if trainer.num_seeds else ""))
        checkpoint(0, env_steps)
    else:
        epoch, env_steps = meta.epoch, meta.env_steps
        if fill_buffer:
            env_steps += prefill_steps
            log(f"the checkpoint has no replay buffer: refilled it with {prefill_steps:,} env "
                "steps of the current policy (the run is no longer an exact continuation)")

    progress = runs.Progress(config.num_epochs, epoch, env_steps) if records[0].main_process \
        else None
    epoch_steps = config.training_steps_per_epoch * config.env_steps_per_training_step
    stop = watch.agreed()
    while stop is None and epoch < config.num_epochs:
        epoch += 1
        start = time.perf_counter()
        state, train_metrics = train_epoch(state)
        train_metrics = [{k if is_diagnostic(k) else f"train/{k}": v
                          for k, v in metrics.items()}
                         for metrics in _seed_metrics(trainer, train_metrics)]
        train_s = time.perf_counter() - start
        _check_finite(trainer, state, train_metrics, records, epoch, log)
        start = time.perf_counter()
        eval_metrics = _seed_metrics(trainer, evaluate(state.agent.params,
                                                       evaluation_keys(epoch)))
        eval_s = time.perf_counter() - start
        env_steps += epoch_steps
        for index, record in alive():
            record.metrics({
                "epoch": epoch, "env_steps": env_steps, **train_metrics[index],
                **eval_metrics[index],
                "time/epoch_s": train_s, "time/eval_s": eval_s,
                "time/env_steps_per_s": epoch_steps / train_s,
                "time/sgd_steps_per_s": (config.training_steps_per_epoch
                                         * config.sgd_batches_per_training_step / train_s),
            })
        if progress:
            progress.update(epoch, env_steps, _mean_metrics([record.history[-1]
                                                             for _, record in alive()]))
        stop = watch.agreed()
        if epoch % config.checkpoint_every == 0 or epoch == config.num_epochs or stop:
            checkpoint(epoch, env_steps)
    if stop:
        if any(record.last_checkpoint != epoch for _, record in alive()):
            checkpoint(epoch, env_steps)
        raise Preempted(epoch, stop, str(alive()[0][1].path))
    if config.save_buffer:
        for index, record in alive():
            steps = replay.stored_steps(trainer.seed_state(state, index).buffer)
            file = runs.write_dataset(record.path, steps, trainer.goal_env.goal_indices)
            log(f"replay buffer saved: {file} ({file.stat().st_size / 2**20:.1f} MiB, "
                f"{steps['traj_id'].shape[0]} steps x {steps['traj_id'].shape[1]} envs)")
    if config.render and records[0].main_process:
        for index, record in alive():
            try:
                render_policy(trainer, trainer.seed_state(state, index).agent.params,
                              record.path / "render", epoch,
                              evaluation_key(record.config, epoch), log=log)
            except Exception as error:  # the run is saved; a picture is not worth failing it
                log(f"rendering failed ({type(error).__name__}: {error}); retry with: "
                    f"python -m crl.render {record.path}")
    diverged = {record.config.seed: record.diverged for record in records if record.diverged}
    if diverged:
        raise SeedsDiverged(diverged)
    return state


def _check_finite(trainer: Trainer, state: TrainState, train_metrics: list[dict[str, float]],
                  records: list[_RunRecord], epoch: int, log: Callable[[str], None]) -> None:
    """Stop recording each run whose losses or parameters are no longer finite: raise Diverged
    for one run, or when every seed of a group has diverged; otherwise the others go on."""
    tree = {"params": state.agent.params, "agent": state.agent.replace(params=None)}
    if not trainer.num_seeds:
        non_finite = first_non_finite(train_metrics[0], tree)
        if non_finite:
            raise Diverged(epoch, non_finite, records[0].last_checkpoint)
        return
    for record, non_finite in zip(records, first_non_finite_per_seed(train_metrics, tree),
                                  strict=True):
        if non_finite and not record.diverged:
            record.diverged = Diverged(epoch, non_finite, record.last_checkpoint)
            log(f"seed {record.config.seed} ({record.path}) {record.diverged}; the other seeds "
                "go on")
    if all(record.diverged for record in records):
        raise SeedsDiverged({record.config.seed: record.diverged for record in records})


def spread_seeds_over_cpu_cores(num_seeds: int) -> None:
    """Give JAX one CPU device per core (as many as divide ``num_seeds``), unless XLA_FLAGS
    sets a count or JAX has started already. On a CPU, XLA runs one program of these sizes
    on one core; as devices, the cores each train their share of a --seeds group side by side,
    each seed on one device (the numbers of a seed alone). Accelerators are not affected."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    count = math.gcd(num_seeds, cores or 1)
    if count > 1 and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS",
                                                                                  ""):
        with contextlib.suppress(RuntimeError):  # JAX's backends have started: leave them
            jax.config.update("jax_num_cpu_devices", count)


def main(argv: list[str] | None = None) -> Any:
    argv = list(sys.argv[1:] if argv is None else argv)
    resume = _pop_option(argv, "--resume")
    try:
        config = parse_args(argv) if resume is None else runs.resume_config(Path(resume), argv)
        if config.seeds:
            spread_seeds_over_cpu_cores(len(config.seeds))
        train(config, resume=resume is not None)
    except runs.WriteError as error:
        print(f"crl: error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_WRITE_FAILED) from None
    except OutOfMemory as error:
        print(f"crl: error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_OUT_OF_MEMORY) from None
    except (ConfigError, FileExistsError, runs.RunError) as error:
        fail(str(error))
    except KeyboardInterrupt:
        print("crl: interrupted; what the run had checkpointed is intact", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
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
