"""Configuration of a training run: one frozen dataclass, parsed by tyro, validated before any
JAX work. Defaults are the paper's (Wang et al. 2025, built on JaxGCRL)."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import io
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from crl import agents, envs
from crl.losses import CONTRASTIVE_LOSSES, ENERGIES
from crl.networks.mlp import ACTIVATIONS, REMAT_MODES

COMPUTE_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Config:
    # Task
    agent: str = "crl"
    """Algorithm: crl (contrastive RL), sac, td3 (on crl's sparse reward; add --her for
    hindsight goals) or gcbc (goal-conditioned behaviour cloning); docs/agents.md."""
    env: str = "ant_maze"
    """Environment name (`python -m crl.envs` lists them)."""
    eval_env: str | None = None
    """Environment for evaluation, e.g. an `_eval` variant; default: `env`."""
    backend: str | None = None
    """Brax pipeline (spring, positional, generalized, mjx); default: the env's own."""
    episode_length: int | None = None
    """Steps per episode and length of the sampled replay windows; default: the env's own."""
    reset: str | None = None
    """What a training env restarts from when its episode ends: first_state (the start and goal
    of its first episode, for the whole run: the paper's code, Brax's AutoResetWrapper) or
    resample (a new start and goal each episode: more varied data); default: the env's own
    (`python -m crl.envs`). Evaluation always draws fresh episodes."""
    maze_goal_noise: float | None = None
    """Noise of a maze env's goals: uniform, this many cells either way around the centre of a
    goal cell, below 0.5; default: the env's own (0, the cell's centre, for the paper's mazes;
    0.25 for crl's point mazes). Evaluation uses it too, on a maze."""
    maze_layout: str | None = None
    """Maze of a maze env (point_*, ant_*_maze, humanoid_*_maze): a layout name, a file in the
    format of crl/envs/mazes.txt, or rows separated by '/' ('#####/#RGG#/...'). Evaluation uses
    it too unless --eval-env names another env."""

    # Networks
    depth: int = 4
    """Dense layers in the residual blocks of every network (a multiple of 4)."""
    actor_depth: int | None = None
    """Overrides `depth` for the actor."""
    critic_depth: int | None = None
    """Overrides `depth` for the critic (crl: both encoders; sac, td3: both Q-networks)."""
    width: int = 256
    """Units of every hidden layer of the residual blocks."""
    actor_width: int | None = None
    """Overrides `width` for the actor."""
    critic_width: int | None = None
    """Overrides `width` for the critic."""
    actor_residual: bool = True
    """Skip connections in the actor's blocks (off: a plain MLP of as many layers; an ablation
    of the paper)."""
    critic_residual: bool = True
    """Skip connections in the critic's blocks."""
    actor_layer_norm: bool = True
    """LayerNorm after every Dense layer of the actor but the output."""
    critic_layer_norm: bool = True
    """LayerNorm after every Dense layer of the critic but the output."""
    actor_activation: str = "swish"
    """Activation of the actor's hidden layers: swish or relu."""
    critic_activation: str = "swish"
    """Activation of the critic's hidden layers: swish or relu."""
    repr_dim: int = 64
    """Size of the representations phi(s, a) and psi(g) (crl)."""
    remat: str = "elementwise"
    """What the backward pass recomputes instead of storing: elementwise (LayerNorm and Swish;
    stores the Dense outputs), blocks (whole residual blocks; least memory) or none."""
    compute_dtype: str = "float32"
    """Dtype of the networks' matrix products: float32 or bfloat16. Parameters, optimiser states,
    LayerNorm statistics and losses stay float32."""

    # Losses and optimisation
    energy: str = "l2"
    """Critic energy of crl: l2 (-||phi - psi||), l2_squared, dot, cosine."""
    contrastive_loss: str = "fwd_infonce"
    """Critic loss of crl: fwd_infonce, bwd_infonce, sym_infonce or binary_nce."""
    logsumexp_penalty: float = 0.1
    """Weight of crl's logsumexp^2 penalty on the logits."""
    discount: float = 0.99
    """Parameter of the geometric distribution of hindsight goals (crl, gcbc); the TD discount
    of sac and td3."""
    entropy: bool = True
    """Entropy regularisation of the actor (crl, sac) with its learnt temperature; off
    (--no-entropy): the temperature is fixed at 0 and the actor maximises Q alone."""
    target_entropy: float | None = None
    """Entropy target of the temperature; default -0.5 * action size (crl), -action size (sac)."""
    actor_lr: float = 3e-4
    """Learning rate of the actor (Adam)."""
    critic_lr: float = 3e-4
    """Learning rate of the critic (Adam)."""
    alpha_lr: float = 3e-4
    """Learning rate of the temperature (crl, sac)."""
    batch_size: int = 512
    """Transitions per SGD step, over all devices."""
    tau: float = 0.005
    """Polyak rate of the target networks (sac, td3)."""
    her: bool = False
    """Hindsight experience replay for sac and td3: replace a fraction of the goals by a later
    state of the same trajectory (the "future" strategy), the reward recomputed for it."""
    her_fraction: float = 0.5
    """With --her: the fraction of goals relabelled."""
    policy_noise: float = 0.2
    """TD3's target-policy smoothing noise (std)."""
    noise_clip: float = 0.5
    """TD3's clip of the smoothing noise."""
    policy_delay: int = 2
    """TD3: critic updates per actor and target update."""
    exploration_noise: float = 0.1
    """TD3's Gaussian exploration noise (std) on collected actions."""

    # Data and schedule
    num_envs: int = 512
    """Envs stepped in parallel, over all devices."""
    unroll_length: int = 62
    """Env steps collected per env in each training step."""
    max_replay_size: int = 10_000
    """Replay capacity in time steps per env."""
    min_replay_size: int = 1_000
    """Time steps per env collected before training starts."""
    num_sgd_batches_per_training_step: int = 800
    """Most SGD steps per training step (fewer when the sampled windows hold fewer batches)."""
    use_all_batches: bool = False
    """Train on every batch the sampled windows hold (num_envs x (episode_length - 1) //
    batch_size SGD steps per training step), ignoring num_sgd_batches_per_training_step."""
    training_steps_multiplier: int = 1
    """Training steps (a collection and its SGD steps) per epoch, as a multiple of those
    total_env_steps allows: the run collects about this many times total_env_steps (the paper
    code's option of the same name)."""
    explore_actions: int = 1
    """Actions sampled from the policy per collected step; above 1, the one of highest Q under
    the current critic is taken (best-of-K; crl and sac)."""
    eval_actions: int = 1
    """1: evaluate the deterministic action tanh(mean) (or a sample, --eval-stochastic); above
    1, the best under the critic of this many sampled actions."""
    eval_stochastic: bool = False
    """Evaluate with an action sampled from the policy instead of tanh(mean)."""
    total_env_steps: int = 100_000_000
    """Env steps of the whole run, prefill included."""
    num_epochs: int = 100
    """Epochs of the run: each is one compiled call, then an evaluation and a checkpoint."""
    num_eval_envs: int = 128
    """Evaluation episodes after each epoch (one per env)."""
    seed: int = 0
    """Seed of every random number of the run (an integer in [0, 2**31))."""
    seeds: tuple[int, ...] = ()
    """Train one independent run per seed in one compiled program, vectorised over seeds
    (overrides --seed): each in its own run directory, as if run alone with --seed."""

    # Run
    run_dir: str = "runs"
    """Parent directory of run directories."""
    run_name: str | None = None
    """Run directory name; default: <env>_d<depth>_s<seed>_<time>. With --seeds, '{seed}' in it
    is replaced by each seed (added as _s{seed} when missing)."""
    compile_cache: str = "~/.cache/crl/jax"
    """JAX persistent compilation cache directory ('' disables it)."""
    checkpoint_every: int = 1
    """Checkpoint every N epochs, after the prefill and after the last epoch (docs/runs.md)."""
    keep_checkpoints: int = 2
    """How many of the most recent checkpoints to keep."""
    checkpoint_buffer: bool = True
    """Keep the replay buffer in checkpoints, as an exact resume needs (docs/runs.md)."""
    diagnostics: bool = True
    """Log the per-block health of every network each epoch under diag/ (docs/diagnostics.md)."""
    save_buffer: bool = False
    """At the end of the run, write the replay buffer as a dataset, <run>/buffer.npz: state,
    action and trajectory id per step and env, oldest first (docs/runs.md)."""
    render: bool = True
    """At the end of the run, save a rollout of the deterministic policy in <run>/render/."""
    wandb: bool = False
    """Also log to Weights & Biases (WANDB_MODE=offline works without an account)."""
    wandb_project: str = "crl"
    """W&B project."""
    wandb_entity: str | None = None
    """W&B entity (user or team); default: your default entity."""
    wandb_group: str | None = None
    """W&B group, e.g. the name of a sweep."""
    wandb_tags: tuple[str, ...] = ()
    """W&B tags."""

    # Launch: several processes (hosts) training one agent. Under Slurm (srun with several
    # tasks) they are found automatically; elsewhere give all three.
    coordinator_address: str | None = None
    """host:port of process 0, e.g. node001:12345."""
    num_processes: int | None = None
    """Processes of a multi-process launch."""
    process_id: int | None = None
    """This process's index in [0, num_processes)."""

    def resolved(self) -> Config:
        """The config with every default that depends on the env or on `depth` filled in."""
        spec = envs.get_spec(self.env)
        return dataclasses.replace(
            self,
            eval_env=self.eval_env or self.env,
            backend=self.backend or spec.default_backend,
            episode_length=self.episode_length or spec.episode_length,
            reset=self.reset or spec.reset,
            actor_depth=self.actor_depth or self.depth,
            critic_depth=self.critic_depth or self.depth,
            actor_width=self.actor_width or self.width,
            critic_width=self.critic_width or self.width,
        )

    # Derived schedule (on a resolved config)
    @property
    def prefill_unrolls(self) -> int:
        return -(-self.min_replay_size // self.unroll_length)

    @property
    def env_steps_per_training_step(self) -> int:
        return self.num_envs * self.unroll_length

    @property
    def training_steps_per_epoch(self) -> int:
        return ((self.total_env_steps - self.min_replay_size * self.num_envs)
                // (self.num_epochs * self.env_steps_per_training_step)
                * self.training_steps_multiplier)

    @property
    def sgd_batches_per_training_step(self) -> int:
        held = self.num_envs * (self.episode_length - 1) // self.batch_size
        return held if self.use_all_batches else min(self.num_sgd_batches_per_training_step,
                                                      held)


class ConfigError(ValueError):
    """An invalid configuration; the message is one line naming the value and what is valid."""


def _validate_agent(config: Config) -> None:
    try:
        spec = agents.get_agent_spec(config.agent)
    except agents.UnknownAgentError as error:
        raise ConfigError(f"agent: {error}") from None
    defaults = Config()
    # A resolved config carries critic_depth = depth and critic_width = width, which are no
    # choice of the user's.
    resolved_from = {"critic_depth": config.depth, "critic_width": config.width}
    for name in agents.AGENT_OPTIONS:
        value, default = getattr(config, name), getattr(defaults, name)
        unchanged = value == default or (name in resolved_from and value == resolved_from[name])
        if name not in spec.options and not unchanged:
            users = [agent for agent, other in agents.REGISTRY.items() if name in other.options]
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} does not apply to agent {config.agent!r}; it is an "
                              f"option of {', '.join(users)}")
    if config.her_fraction != defaults.her_fraction and not config.her:
        raise ConfigError(f"her_fraction={config.her_fraction} needs --her")
    if not 0 < config.her_fraction <= 1:
        raise ConfigError(f"her_fraction={config.her_fraction} must be in (0, 1]")
    if not 0 < config.tau <= 1:
        raise ConfigError(f"tau={config.tau} must be in (0, 1]")
    for name in ("policy_noise", "noise_clip", "exploration_noise"):
        if not getattr(config, name) >= 0:
            raise ConfigError(f"{name}={getattr(config, name)} must be >= 0")
    if config.policy_delay < 1:
        raise ConfigError(f"policy_delay={config.policy_delay} must be a positive integer")


def _validate_numbers(config: Config) -> None:
    for field in dataclasses.fields(Config):
        value = getattr(config, field.name)
        if field.type in ("float", "float | None") and value is not None \
                and not math.isfinite(value):
            raise ConfigError(f"{field.name}={value} must be a finite number")
    for seed in (config.seed, *config.seeds):
        if not 0 <= seed < 2**31:
            raise ConfigError(f"seed={seed} must be an integer in [0, 2**31)")
    if len(set(config.seeds)) < len(config.seeds):
        raise ConfigError(f"seeds={' '.join(map(str, config.seeds))} repeats a seed; give each "
                          "once")


def _validate_paths(config: Config) -> None:
    """Refuse a run name that is not one directory name, and a run or cache directory that
    is not a directory or cannot be written, before anything is compiled or written."""
    name = config.run_name
    if name is not None and config.seeds:
        name = seed_configs(config)[0].run_name
    if name is not None and (name in ("", ".", "..") or "/" in name or os.sep in name):
        raise ConfigError(f"run_name={name!r} must be one directory name: not empty, '.' or "
                          "'..', without '/'")
    if not config.run_dir:
        raise ConfigError("run_dir='' must name a directory, e.g. runs")
    for option, directory in (("run_dir", config.run_dir), ("compile_cache", config.compile_cache)):
        if not directory:  # compile_cache '' disables the cache
            continue
        existing = Path(directory).expanduser()
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise ConfigError(f"{option}={directory!r}: {existing} is a file, not a directory")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"{option}={directory!r}: {existing} is not writable")


SEED_MARK = "{seed}"


def seed_configs(config: Config) -> list[Config]:
    """The configuration of each run of ``config``: ``[config]`` itself, or with --seeds one
    per seed, exactly as that run alone with --seed would have it (its ``run_name`` with the
    seed put in for SEED_MARK)."""
    if not config.seeds:
        return [config]
    template = config.run_name
    if template is not None and SEED_MARK not in template:
        template += f"_s{SEED_MARK}"
    return [dataclasses.replace(config, seed=seed, seeds=(), run_name=None if template is None
                                else template.replace(SEED_MARK, str(seed)))
            for seed in config.seeds]


def check_device_split(config: Config, num_devices: int) -> None:
    """Refuse sizes that do not split evenly over ``num_devices`` devices."""
    for name in ("num_envs", "batch_size", "num_eval_envs"):
        value = getattr(config, name)
        if value % num_devices:
            fitting = -(-value // num_devices) * num_devices
            raise ConfigError(f"{name}={value} must divide by the {num_devices} devices: use a "
                              f"multiple of {num_devices}, e.g. {fitting}")


def validate(config: Config) -> Config:
    """Return the resolved config or raise ConfigError. Imports nothing heavy."""
    _validate_agent(config)
    _validate_numbers(config)
    _validate_paths(config)
    for name in ("env", "eval_env"):
        value = getattr(config, name)
        if value is not None:
            try:
                envs.get_spec(value)
            except envs.UnknownEnvError as error:
                raise ConfigError(f"{name}: {error}") from None
    spec = envs.get_spec(config.env)
    if config.maze_goal_noise is not None:
        if not spec.is_maze:
            raise ConfigError(f"maze_goal_noise: env {config.env!r} is not a maze")
        if not 0 <= config.maze_goal_noise < 0.5:
            raise ConfigError(f"maze_goal_noise={config.maze_goal_noise} must be in [0, 0.5) "
                              "cells: more would put goals in the next cell")
    if config.maze_layout is not None:
        if not spec.is_maze:
            # A family's own layouts (humanoid_big_maze_eval) carry its name already.
            families = {name.removesuffix(other.kwargs["layout"])
                        for name, other in envs.REGISTRY.items() if other.is_maze}
            mazes = sorted(family + "<layout>" for family in families if family)
            raise ConfigError(f"maze_layout: env {config.env!r} is not a maze; --maze-layout "
                              f"applies to the maze envs ({', '.join(mazes)})")
        from crl.envs.maze import LayoutError, load_layout

        try:
            load_layout(config.maze_layout)
        except LayoutError as error:
            raise ConfigError(f"maze_layout: {error}") from None
    if config.backend is not None:
        if spec.default_backend is None:
            raise ConfigError(f"backend={config.backend!r}: env {config.env!r} is pure JAX and "
                              "has no Brax pipeline; leave --backend unset")
        if config.backend not in envs.BACKENDS:
            raise ConfigError(f"backend={config.backend!r} is not a Brax pipeline; valid: "
                              f"{', '.join(envs.BACKENDS)}")
        if config.backend not in spec.backends:
            raise ConfigError(f"backend={config.backend!r} cannot run env {config.env!r}; "
                              f"valid: {', '.join(spec.backends)}")
    if config.reset is not None and config.reset not in envs.RESET_MODES:
        raise ConfigError(f"reset={config.reset!r} is unknown; valid: "
                          f"{', '.join(envs.RESET_MODES)}")
    eval_spec = envs.get_spec(config.eval_env or config.env)
    backend = config.backend or spec.default_backend
    if eval_spec is not spec and eval_spec.default_backend is not None and backend is not None \
            and backend not in eval_spec.backends:
        raise ConfigError(f"eval_env={config.eval_env!r} cannot run on backend {backend!r}, "
                          f"which trains env {config.env!r}; its backends: "
                          f"{', '.join(eval_spec.backends)}")
    for name in ("depth", "actor_depth", "critic_depth"):
        value = getattr(config, name)
        if value is not None and (value <= 0 or value % 4):
            raise ConfigError(f"{name}={value} must be a positive multiple of 4 (residual blocks "
                              "of 4 layers): e.g. 4, 8, 16, ..., 1024")
    if config.remat not in REMAT_MODES:
        raise ConfigError(f"remat={config.remat!r} is unknown; valid: {', '.join(REMAT_MODES)}")
    if config.compute_dtype not in COMPUTE_DTYPES:
        raise ConfigError(f"compute_dtype={config.compute_dtype!r} is unknown; valid: "
                          f"{', '.join(COMPUTE_DTYPES)}")
    _validate_launch(config)
    if config.energy not in ENERGIES:
        raise ConfigError(f"energy={config.energy!r} is unknown; valid: {', '.join(ENERGIES)}")
    if config.contrastive_loss not in CONTRASTIVE_LOSSES:
        raise ConfigError(f"contrastive_loss={config.contrastive_loss!r} is unknown; valid: "
                          f"{', '.join(CONTRASTIVE_LOSSES)}")
    for name in ("actor_activation", "critic_activation"):
        if getattr(config, name) not in ACTIVATIONS:
            raise ConfigError(f"{name}={getattr(config, name)!r} is unknown; valid: "
                              f"{', '.join(ACTIVATIONS)}")
    positive = ("width", "actor_width", "critic_width", "repr_dim", "batch_size", "num_envs",
                "unroll_length", "max_replay_size",
                "min_replay_size", "num_sgd_batches_per_training_step", "total_env_steps",
                "num_epochs", "num_eval_envs", "episode_length", "checkpoint_every",
                "keep_checkpoints", "training_steps_multiplier", "explore_actions",
                "eval_actions")
    for name in positive:
        value = getattr(config, name)
        if value is not None and value <= 0:
            raise ConfigError(f"{name}={value} must be a positive integer")
    for name in ("actor_lr", "critic_lr", "alpha_lr"):
        if not getattr(config, name) > 0:
            raise ConfigError(f"{name}={getattr(config, name)} must be positive")
    if not 0 < config.discount < 1:
        raise ConfigError(f"discount={config.discount} must be in (0, 1)")
    if np.float32(config.discount) >= 1:  # the networks and the goal sampling use float32
        raise ConfigError(f"discount={config.discount} is 1.0 in float32, which would make "
                          "hindsight goals uniform over the window; use at most 0.9999999")
    if config.logsumexp_penalty < 0:
        raise ConfigError(f"logsumexp_penalty={config.logsumexp_penalty} must be >= 0")

    config = config.resolved()
    if config.episode_length < 2:
        raise ConfigError(f"episode_length={config.episode_length} must be at least 2 (a window "
                          "needs a step and a later goal)")
    if config.min_replay_size < config.episode_length:
        raise ConfigError(f"min_replay_size={config.min_replay_size} must be at least "
                          f"episode_length={config.episode_length}: training samples windows "
                          "of one episode length")
    if config.max_replay_size < config.prefill_unrolls * config.unroll_length:
        raise ConfigError(f"max_replay_size={config.max_replay_size} must hold the prefill of "
                          f"{config.prefill_unrolls * config.unroll_length} steps per env "
                          f"(min_replay_size rounded up to unroll_length)")
    transitions = config.num_envs * (config.episode_length - 1)
    if config.batch_size > transitions:
        raise ConfigError(f"batch_size={config.batch_size} is larger than the {transitions} "
                          f"transitions sampled per training step (num_envs={config.num_envs} x "
                          f"(episode_length={config.episode_length} - 1)); use at most "
                          f"{transitions}")
    if config.training_steps_per_epoch < 1:
        needed = (config.min_replay_size * config.num_envs
                  + config.num_epochs * config.env_steps_per_training_step)
        raise ConfigError(f"total_env_steps={config.total_env_steps} leaves no training step: "
                          f"prefill plus one training step per epoch needs at least {needed}")
    return config


def _validate_launch(config: Config) -> None:
    launch = {"coordinator_address": config.coordinator_address,
              "num_processes": config.num_processes, "process_id": config.process_id}
    given = [name for name, value in launch.items() if value is not None]
    if config.save_buffer and config.num_processes not in (None, 1):
        raise ConfigError(f"--save-buffer needs a one-process run (num_processes="
                          f"{config.num_processes}): each process holds only its envs' replay")
    if given and len(given) < len(launch):
        missing = [name for name in launch if name not in given]
        raise ConfigError(f"{', '.join(given)} given without {', '.join(missing)}: a multi-process "
                          "launch needs coordinator_address, num_processes and process_id")
    if given:
        if config.num_processes < 1:
            raise ConfigError(f"num_processes={config.num_processes} must be a positive integer")
        if not 0 <= config.process_id < config.num_processes:
            raise ConfigError(f"process_id={config.process_id} must be in [0, num_processes="
                              f"{config.num_processes})")
        if ":" not in config.coordinator_address:
            raise ConfigError(f"coordinator_address={config.coordinator_address!r} must be "
                              "host:port, e.g. node001:12345")


PRESETS: dict[str, Config] = {
    # Learns point_u_maze on a 2-core CPU in a few minutes (the README's first run).
    "point_quick": Config(
        env="point_u_maze", episode_length=100, depth=4, width=64, num_envs=128,
        unroll_length=10, batch_size=128, min_replay_size=100, max_replay_size=1_000,
        num_sgd_batches_per_training_step=80, total_env_steps=1_000_000, num_epochs=20,
        num_eval_envs=64),
}
# The baselines on the same task, data and budget (docs/agents.md).
PRESETS |= {
    f"point_quick_{name}": dataclasses.replace(PRESETS["point_quick"], **changes)
    for name, changes in (("sac", {"agent": "sac"}), ("sac_her", {"agent": "sac", "her": True}),
                          ("td3", {"agent": "td3"}), ("td3_her", {"agent": "td3", "her": True}),
                          ("gcbc", {"agent": "gcbc"}))
}


def parse_args(argv: list[str] | None = None) -> Config:
    """Parse ``--preset NAME`` (optional) and every Config field, then validate.
    Exits with one line on stderr for an invalid configuration."""
    argv = list(sys.argv[1:] if argv is None else argv)
    default = Config()
    for at, arg in enumerate(argv):
        if arg == "--preset" or arg.startswith("--preset="):
            name = arg.partition("=")[2] if "=" in arg else (argv[at + 1] if at + 1 < len(argv)
                                                             else "")
            if name not in PRESETS:
                fail(f"preset={name!r} is unknown; valid: {', '.join(PRESETS)}")
            default = PRESETS[name]
            del argv[at:at + (1 if "=" in arg else 2)]
            break
    config = _cli(default, argv, "Train a goal-conditioned RL agent. --preset NAME starts from "
                  f"a preset ({', '.join(PRESETS)}); --resume RUN_DIR continues a run "
                  "(docs/runs.md).")
    try:
        return validate(config)
    except ConfigError as error:
        fail(str(error))


def option_flags() -> list[str]:
    """Every ``--flag`` of a Config field (``--no-FLAG`` of the booleans too)."""
    flags = []
    for field in dataclasses.fields(Config):
        flag = "--" + field.name.replace("_", "-")
        flags += [flag, "--no-" + flag[2:]] if field.type in ("bool", bool) else [flag]
    return flags


def check_option(flag: str, extra: tuple[str, ...] = (),
                 where: str = "python -m crl.train") -> None:
    """Exit with one line, naming the closest valid option, for a flag that is no option."""
    valid = [*option_flags(), *extra]
    if flag in valid:
        return
    close = difflib.get_close_matches(flag, valid, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    fail(f"unknown option {flag}; {hint}{where} --help lists the valid ones")


def _cli(default: Config, argv: list[str], description: str) -> Config:
    """tyro's parse of ``argv`` over ``default``, its errors turned into one line."""
    import tyro

    for arg in argv:
        if arg.startswith("--"):
            check_option(arg.partition("=")[0], extra=("--help", "--preset", "--resume"))
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return tyro.cli(Config, default=default, args=argv, description=description)
    except SystemExit as exit:
        if not exit.code:  # --help
            sys.stderr.write(errors.getvalue())
            raise
        fail(_tyro_reason(errors.getvalue()))


def _tyro_reason(text: str) -> str:
    """The message of one of tyro's error panels on one line: after its heading, the lines up
    to the next rule (the panel is drawn with box characters on a terminal, '-' elsewhere)."""
    box = " -\u2500\u2502\u256d\u256e\u2570\u256f"
    raw = text.splitlines()
    lines = [line.strip(box) for line in raw]
    is_rule = [bool(r.strip()) and not line for r, line in zip(raw, lines, strict=True)]
    message, started = [], False
    for line, rule in list(zip(lines, is_rule, strict=True))[1:]:
        if rule and started:
            break
        if line:
            message.append(line)
            started = True
    return f"{' '.join(message) or text.strip()} (python -m crl.train --help lists the options)"


# Fields a resumed run cannot change: they fix the shapes of the saved state, or (agent, env,
# seed) what the run is.
FIXED_ON_RESUME = ("agent", "her", "env", "backend", "maze_layout", "maze_goal_noise",
                   "episode_length", "reset",
                   "depth", "actor_depth", "critic_depth", "width", "actor_width",
                   "critic_width", "actor_residual", "critic_residual", "actor_layer_norm",
                   "critic_layer_norm", "actor_activation", "critic_activation", "repr_dim",
                   "num_envs", "max_replay_size", "seed")


def fixed_field_refusal(saved: Config, requested: Config) -> str | None:
    """The one-line refusal of a resume that changes fields of FIXED_ON_RESUME, or None."""
    changes = fixed_field_changes(saved, requested)
    return (f"cannot resume with {', '.join(changes)}: these fields fix the shapes of the saved "
            "state (or what the run is); start a new run instead") if changes else None


def fixed_field_changes(saved: Config, requested: Config) -> list[str]:
    """``name old -> new`` for every field of FIXED_ON_RESUME that differs."""
    return [f"{name} {getattr(saved, name)!r} -> {getattr(requested, name)!r}"
            for name in FIXED_ON_RESUME if getattr(saved, name) != getattr(requested, name)]


def config_from_dict(values: dict[str, Any]) -> Config:
    """The inverse of ``dataclasses.asdict`` after a JSON round trip (lists back to tuples)."""
    unknown = sorted(set(values) - {field.name for field in dataclasses.fields(Config)})
    if unknown:
        raise ConfigError(f"unknown config fields {', '.join(unknown)} (written by another "
                          "version of crl?)")
    if "episode_length" in values:
        # A resolved config saved before reset modes (when every env re-sampled its episodes)
        # or per-family widths existed: their values then.
        width = values.get("width", Config.width)
        values = {"reset": "resample", "actor_width": width, "critic_width": width, **values}
    return Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def parse_resume_args(saved: Config, argv: list[str]) -> Config:
    """Parse the options given with ``--resume RUN``: every field defaults to the run's own value.

    Changing ``num_epochs`` alone keeps the length of an epoch (``total_env_steps`` follows), so
    ``--num-epochs 200`` extends a 100-epoch run by 100 epochs like the first ones. Fields of
    FIXED_ON_RESUME cannot change (they are checked against the checkpoint again when it is
    restored).
    """
    for flag in ("--preset", "--run-dir", "--run-name"):
        if any(arg == flag or arg.startswith(flag + "=") for arg in argv):
            fail(f"{flag} cannot be combined with --resume: the run directory names the run "
                 "and holds its configuration")
    config = _cli(saved, argv, "Resume a run: options given here change the run's saved "
                  "configuration (see docs/runs.md).")
    if config.num_epochs != saved.num_epochs and config.total_env_steps == saved.total_env_steps:
        config = dataclasses.replace(config, total_env_steps=(
            saved.min_replay_size * saved.num_envs
            + config.num_epochs * (saved.training_steps_per_epoch
                                   // saved.training_steps_multiplier)
            * saved.env_steps_per_training_step))
    refusal = fixed_field_refusal(saved, config)  # the saved config is resolved: compare as is
    if refusal:
        fail(refusal)
    try:
        return validate(config)
    except ConfigError as error:
        fail(str(error))


def fail(message: str) -> None:
    print(f"crl: error: {message}", file=sys.stderr)
    raise SystemExit(2)
