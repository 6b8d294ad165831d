"""``python -m crl.plan [crl.train options] --gpu h100``: what a run needs and costs, before
anything is compiled.

Per device: the memory of parameters, optimiser states and the rest of the agent's state, the
replay buffer and the env states (exact, from the shapes: ``jax.eval_shape`` traces the
initialisation and compiles nothing), and of one SGD step's gradients and activations (a model
of what the backward pass keeps, by remat mode); whether it fits; the largest depth and batch
that fit with each remat mode; the FLOPs and memory traffic of one SGD step, and the time of
the run: its matrix products at a stated fraction of the device's peak plus its elementwise work
at a stated fraction of its memory bandwidth. ``--compile`` also compiles the SGD step here on
abstract shapes and prints XLA's own figure beside the model's. docs/performance.md explains
the model and how it compares with XLA's buffer assignment.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import sys
from typing import Any

import jax
import numpy as np

from crl import rates
from crl.agents import make_agent
from crl.agents.base import Agent, EnvSizes
from crl.config import Config, fail, parse_args, seed_configs
from crl.envs import get_spec
from crl.envs.wrappers import EpisodeBatch
from crl.networks.mlp import LAYERS_PER_BLOCK, REMAT_MODES

GB = 1e9


@dataclasses.dataclass(frozen=True)
class Device:
    memory: float  # bytes of one device (one GPU, one TPU chip)
    float32_peak: float  # FLOP/s of dense matrix products at float32 compute (TF32 on NVIDIA)
    bfloat16_peak: float  # FLOP/s with --compute-dtype bfloat16
    bandwidth: float  # bytes/s between the device's memory and its cores
    label: str


# Vendors' datasheet figures, dense (no sparsity). NVIDIA runs float32 products in TF32 by
# default; a TPU runs them in one bfloat16 pass (JAX's default precision), hence one peak.
DEVICES = {
    "h100": Device(80 * GB, 495e12, 989e12, 3.35e12, "H100 SXM 80 GB"),
    "h200": Device(141 * GB, 495e12, 989e12, 4.8e12, "H200 SXM 141 GB"),
    "a100-40g": Device(40 * GB, 156e12, 312e12, 1.555e12, "A100 40 GB"),
    "a100-80g": Device(80 * GB, 156e12, 312e12, 2.039e12, "A100 80 GB"),
    "l40s": Device(48 * GB, 183e12, 362e12, 0.864e12, "L40S 48 GB"),
    "rtx4090": Device(24 * GB, 82.6e12, 165e12, 1.008e12, "RTX 4090 24 GB"),
    "v4": Device(32 * 2**30, 275e12, 275e12, 1.2e12, "TPU v4 chip, 32 GiB"),
    "v5e": Device(16 * 2**30, 197e12, 197e12, 0.819e12, "TPU v5e chip, 16 GiB"),
    "v5p": Device(95 * 2**30, 459e12, 459e12, 2.765e12, "TPU v5p chip, 95 GiB"),
    "v6e": Device(32 * 2**30, 918e12, 918e12, 1.64e12, "TPU v6e chip, 32 GiB"),
}
# JAX takes this fraction of a GPU's memory at start (XLA_PYTHON_CLIENT_MEM_FRACTION).
GPU_MEMORY_FRACTION = 0.75
# What a run reaches of a datasheet's peak FLOP/s and bandwidth; the local device's rates are
# measured, so it reaches all of them.
DEFAULT_PEAK_FRACTION = 0.4
DEFAULT_BANDWIDTH_FRACTION = 0.7

# The elementwise work of an SGD step (LayerNorm, Swish, their gradients and recomputation,
# residual adds) is bound by memory traffic. Measured steps on a CPU (docs/performance.md) fit
# this many [rows, width] arrays moved per layer of each forward pass's worth of work (the
# passes FLOPs count: 3 for a trained pass, 2 for an input-only one, 1 for a forward), at the
# streaming bandwidth of large arrays; storing every activation moves more than recomputing
# them. Adam reads the parameters, gradients and two moments and writes three of them back.
# GPUs' fusion of these kernels may move less (a prediction until measured there).
ARRAYS_PER_LAYER_PASS = {"none": 25.0, "elementwise": 19.0, "blocks": 16.0}
ADAM_ARRAYS = 7

# What the backward pass keeps of each Dense -> LayerNorm -> Swish layer, in arrays of
# [batch rows, width], per pass through a network whose gradient is taken: everything (the Dense
# output, LayerNorm's centred and normalised values, Swish's sigmoid and product: about 7.3 in
# XLA's buffer assignment), the Dense outputs plus each block's input (1 + 1/4), or each
# block's input (1/4). A network of one block is not scanned by XLA (a loop of one trip is
# unrolled) and keeps about 3 arrays per layer whatever the mode. Per pass, about 7.6 arrays
# more (input and output layers, the losses' rows). With ``blocks``, the block recomputed at a
# time reuses memory freed by then, and adds nothing.
KEPT_PER_LAYER = {"none": 7.3, "elementwise": 1.22, "blocks": 0.27}
KEPT_PER_LAYER_ONE_BLOCK = 3.0
KEPT_PER_PASS = 7.6
LOGIT_ARRAYS = 4  # crl's [rows, batch] logits: the matrix, its softmax, their gradients


@dataclasses.dataclass
class Plan:
    config: Config  # of one seed
    device: Device
    num_seeds: int  # 0: one run, no --seeds
    seeds_per_device: int
    data_devices: int
    memory: dict[str, float]  # item -> bytes per device
    available: float
    step_flops: float  # matrix products the step needs, all seeds, global batch
    recompute_flops: float  # and those remat adds
    step_traffic: float  # bytes the elementwise work and Adam move, all seeds, global batch
    sgd_steps: int
    acting_flops: float
    peak_fraction: float
    bandwidth_fraction: float

    @property
    def total(self) -> float:
        return sum(self.memory.values())

    @property
    def fits(self) -> bool:
        return self.total <= self.available

    @property
    def run_flops(self) -> float:
        return self.step_flops * self.sgd_steps + self.acting_flops

    @property
    def flop_rate(self) -> float:
        """FLOP/s of the run's devices together."""
        peak = (self.device.bfloat16_peak if self.config.compute_dtype == "bfloat16"
                else self.device.float32_peak)
        return peak * self.peak_fraction * self.data_devices

    @property
    def step_seconds(self) -> tuple[float, float]:
        """One SGD step's time in matrix products and in memory traffic; the step takes about
        their sum, since neither unit waits for the other's work on this scale."""
        traffic_rate = self.device.bandwidth * self.bandwidth_fraction * self.data_devices
        return ((self.step_flops + self.recompute_flops) / self.flop_rate,
                self.step_traffic / traffic_rate)

    @property
    def run_seconds(self) -> float:
        return sum(self.step_seconds) * self.sgd_steps + self.acting_flops / self.flop_rate


def _network_shape(config: Config, network: str) -> tuple[int, int]:
    """The depth and width of a network family of ``Agent.network_passes``."""
    return ((config.actor_depth, config.actor_width) if network == "actor"
            else (config.critic_depth, config.critic_width))


def _forward_flops(rows: int, in_dim: int, depth: int, width: int, out_dim: int) -> float:
    """The input layer, ``depth`` square layers in the blocks, the output layer."""
    return 2.0 * rows * (in_dim * width + depth * width**2 + width * out_dim)


def step_memory(config: Config, agent: Agent, params_bytes: float, rows: int,
                remat: str | None = None) -> dict[str, float]:
    """Bytes one SGD step adds to the state, on a device holding ``rows`` of the batch: the
    gradients of every parameter, the activations kept for the backward pass, crl's logits."""
    remat = remat or config.remat
    kept = 0.0
    for network, (full, inputs, _) in agent.network_passes.items():
        depth, width = _network_shape(config, network)
        array = rows * width * 4
        per_layer = (KEPT_PER_LAYER_ONE_BLOCK if depth == LAYERS_PER_BLOCK
                     else KEPT_PER_LAYER[remat])
        kept += (full + inputs) * (per_layer * depth + KEPT_PER_PASS) * array
    memory = {"gradients": params_bytes, "activations": kept}
    if config.agent == "crl":
        memory["logits"] = LOGIT_ARRAYS * rows * config.batch_size * 4
    return memory


def _forward_passes(agent: Agent) -> dict[str, tuple[int, int]]:
    """Per network family, one SGD step's work in forward passes' worth: 3 for a pass whose
    weights are trained (forward, activation and weight gradients), 2 for one differentiated
    only for its inputs (the actor's Q), 1 for a forward pass (targets); and the forward passes
    remat adds (``blocks`` recomputes each trained or differentiated pass once)."""
    recomputed = agent.config.remat == "blocks"
    return {network: (3 * full + 2 * inputs + forward, (full + inputs) * recomputed)
            for network, (full, inputs, forward) in agent.network_passes.items()}


def sgd_step_flops(config: Config, agent: Agent, sizes: EnvSizes) -> tuple[float, float]:
    """Matrix-product FLOPs of one SGD step over the global batch, and those remat's
    recomputation adds. Every network's input layer is counted with all of the state, action
    and goal (a few per cent over, where a network reads only some)."""
    in_dim = sizes.state_size + sizes.action_size + sizes.goal_size
    needed = recomputed = 0.0
    for network, (passes, extra) in _forward_passes(agent).items():
        depth, width = _network_shape(config, network)
        out = 2 * sizes.action_size if network == "actor" else config.repr_dim
        one = _forward_flops(config.batch_size, in_dim, depth, width, out)
        needed, recomputed = needed + passes * one, recomputed + extra * one
    if config.agent == "crl":
        needed += 3 * 2.0 * config.batch_size**2 * config.repr_dim
    return needed, recomputed


def sgd_step_traffic(config: Config, agent: Agent, params_bytes: float) -> float:
    """Bytes the elementwise work of one SGD step over the global batch moves, with Adam's."""
    itemsize = np.dtype(config.compute_dtype).itemsize
    layer_arrays = 0.0  # [batch, width] arrays' worth of layer passes
    for network, (passes, extra) in _forward_passes(agent).items():
        depth, width = _network_shape(config, network)
        layer_arrays += (passes + extra) * (depth + 1) * width / config.width
    array = config.batch_size * config.width * itemsize
    return (ARRAYS_PER_LAYER_PASS[config.remat] * layer_arrays * array
            + ADAM_ARRAYS * params_bytes)


def make_plan(config: Config, device: Device, num_devices: int = 1,
              peak_fraction: float = DEFAULT_PEAK_FRACTION,
              available: float | None = None,
              bandwidth_fraction: float = DEFAULT_BANDWIDTH_FRACTION) -> Plan:
    """The plan of a validated, resolved ``config`` on ``num_devices`` of ``device``."""
    seeds = max(len(config.seeds), 1)
    seed_devices = math.gcd(seeds, num_devices) if config.seeds else 1
    data_devices = num_devices // seed_devices
    seeds_per_device = seeds // seed_devices
    one = dataclasses.replace(seed_configs(config)[0], run_name=None)
    sizes, env_bytes = _env_facts(one.env, one.backend, one.maze_layout, one.episode_length,
                                  one.reset)
    agent = make_agent(one, sizes, data_devices)
    params, rest = _agent_bytes(one, data_devices)
    local_envs = config.num_envs // data_devices
    stored = sizes.state_size + sizes.action_size + 1  # state, action, trajectory id
    if agent.sampling.stores_commanded_goal:
        stored += sizes.goal_size
    per_seed = {
        "parameters": params,
        "optimiser states": rest,
        "replay buffer": float(config.max_replay_size * local_envs * stored * 4),
        "env states": env_bytes * local_envs,
        **step_memory(one, agent, params, config.batch_size // data_devices),
    }
    memory = {k: v * seeds_per_device for k, v in per_seed.items()}
    if available is None:
        available = device.memory * GPU_MEMORY_FRACTION
    sgd_steps = (one.training_steps_per_epoch * one.num_epochs
                 * one.sgd_batches_per_training_step)
    acting = (one.total_env_steps * _forward_flops(
        1, sizes.state_size + sizes.goal_size, one.actor_depth, one.actor_width,
        2 * sizes.action_size))
    needed, recomputed = sgd_step_flops(one, agent, sizes)
    return Plan(one, device, len(config.seeds), seeds_per_device, data_devices, memory, available,
                needed * seeds, recomputed * seeds,
                sgd_step_traffic(one, agent, params * data_devices) * seeds, sgd_steps,
                acting * seeds, peak_fraction, bandwidth_fraction)


def _nbytes(tree: Any) -> float:
    return float(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


@functools.lru_cache(maxsize=8)
def _env_facts(env: str, backend: str, layout: str | None, episode_length: int,
               reset: str) -> tuple[EnvSizes, float]:
    """The env's sizes and the bytes of one env's state (traced, not compiled)."""
    goal_env = get_spec(env).make(backend, layout)
    batch = EpisodeBatch(goal_env, episode_length, reset)
    state = jax.eval_shape(lambda key: batch.reset(jax.random.split(key, 1)),
                           jax.random.PRNGKey(0))
    return (EnvSizes(goal_env.state_size, goal_env.goal_size, goal_env.action_size),
            _nbytes(state))


def _agent_bytes(config: Config, data_devices: int) -> tuple[float, float]:
    """Bytes of the agent's parameters and of the rest of its state (optimiser states, target
    networks, ...). Both are linear in the number of residual blocks of the actor and of the
    critic, so three traced ``init``s (at 1 and 2 blocks) give them at every depth, exactly."""
    shape = dataclasses.replace(Config(), **{name: getattr(config, name) for name in (
        "agent", "her", "env", "backend", "maze_layout", "episode_length", "reset", "width",
        "actor_width", "critic_width", "actor_layer_norm", "critic_layer_norm", "repr_dim",
        "compute_dtype")})
    base = _traced_bytes(shape, 4, 4, data_devices)
    actor_block = np.subtract(_traced_bytes(shape, 8, 4, data_devices), base)
    critic_block = np.subtract(_traced_bytes(shape, 4, 8, data_devices), base)
    blocks = lambda depth: (depth - LAYERS_PER_BLOCK) / LAYERS_PER_BLOCK
    total = (np.asarray(base) + blocks(config.actor_depth) * actor_block
             + blocks(config.critic_depth) * critic_block)
    return float(total[0]), float(total[1])


@functools.lru_cache(maxsize=64)
def _traced_bytes(shape: Config, actor_depth: int, critic_depth: int,
                  data_devices: int) -> tuple[float, float]:
    config = dataclasses.replace(shape, depth=4, actor_depth=actor_depth,
                                 critic_depth=critic_depth)
    # The arguments of make_plan's call: the env built there is this one.
    sizes, _ = _env_facts(config.env, config.backend, config.maze_layout, config.episode_length,
                          config.reset)
    shapes = jax.eval_shape(make_agent(config, sizes, data_devices).init, jax.random.PRNGKey(0))
    params = _nbytes(shapes.params)
    return params, _nbytes(shapes) - params


def largest(config: Config, device: Device, num_devices: int, field: str, remat: str,
            available: float, step: int) -> int:
    """The largest ``field`` (depth or batch_size, a multiple of ``step``) that fits, 0 if none:
    memory grows with both, so a doubling search then a bisection."""
    def fits(value: int) -> bool:
        changes = {field: value, "remat": remat}
        if field == "depth":
            changes |= {"actor_depth": value, "critic_depth": value}
        return make_plan(dataclasses.replace(config, **changes), device, num_devices,
                         available=available).fits

    if not fits(step):
        return 0
    low, high = step, 2 * step
    while fits(high) and high < 2**20:
        low, high = high, 2 * high
    while high - low > step:
        middle = (low + high) // 2 // step * step
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def recommended_remat(config: Config, device: Device, num_devices: int,
                      available: float) -> str | None:
    """The fastest remat mode that fits: elementwise (the fastest measured), then none, then
    blocks (one more forward pass per network); None when none fits."""
    for mode in ("elementwise", "none", "blocks"):
        if make_plan(dataclasses.replace(config, remat=mode), device, num_devices,
                     available=available).fits:
            return mode
    return None


def _gib(value: float) -> str:
    return f"{value / 2**30:,.2f} GiB" if value >= 2**30 else f"{value / 2**20:,.1f} MiB"


def _duration(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:,.1f} h" if hours >= 1 else f"{seconds / 60:,.1f} min"


def describe(plan: Plan, num_devices: int, xla_step: float | None = None) -> list[str]:
    config, device = plan.config, plan.device
    widths = (f"width {config.width}" if config.actor_width == config.critic_width == config.width
              else f"width actor {config.actor_width}, critic {config.critic_width}")
    lines = [f"{config.agent} on {config.env}, depth {config.depth} (actor {config.actor_depth}, "
             f"critic {config.critic_depth}), {widths}, batch {config.batch_size}, "
             f"{config.num_envs} envs, replay {config.max_replay_size:,} steps, remat "
             f"{config.remat}, {config.compute_dtype}"
             + (f", {plan.num_seeds} seeds ({plan.seeds_per_device} per device)"
                if plan.num_seeds else ""),
             f"on {num_devices} x {device.label} ({plan.data_devices} split each run's envs and "
             f"batch)", "", "memory per device:"]
    for item, value in plan.memory.items():
        lines.append(f"  {item:<18} {_gib(value):>12}")
    verdict = "fits" if plan.fits else "DOES NOT FIT"
    lines.append(f"  {'total':<18} {_gib(plan.total):>12}  of {_gib(plan.available)} usable: "
                 f"{verdict}")
    if xla_step is not None:
        model = sum(plan.memory[k] for k in ("gradients", "activations", "logits")
                    if k in plan.memory)
        lines.append(f"  SGD step, XLA here: {_gib(xla_step)} against the model's {_gib(model)} "
                     f"({model / xla_step:.2f})")
    lines += ["", "largest that fits:"]
    for mode in REMAT_MODES:
        depth = largest(config, device, num_devices, "depth", mode, plan.available, 4)
        batch = largest(config, device, num_devices, "batch_size", mode, plan.available,
                        plan.data_devices)
        lines.append(f"  remat {mode:<12} depth {depth or '-':>6}   batch {batch or '-':>8}")
    best = recommended_remat(config, device, num_devices, plan.available)
    lines += ["", f"recommended: --remat {best}" if best else
              "recommended: nothing fits; fewer envs, a smaller replay or batch, more devices"]
    products, traffic = plan.step_seconds
    recomputed = (f" (+{plan.recompute_flops:.3g} recomputed by remat)"
                  if plan.recompute_flops else "")
    lines += ["", f"one SGD step: {plan.step_flops:.3g} FLOP{recomputed} and "
              f"{plan.step_traffic / GB:.3g} GB of elementwise memory traffic",
              f"  {1e3 * products:.3g} ms of matrix products at {plan.peak_fraction:.0%} of the "
              f"{'bfloat16' if config.compute_dtype == 'bfloat16' else 'float32'} peak, "
              f"{1e3 * traffic:.3g} ms of traffic at {plan.bandwidth_fraction:.0%} of "
              f"{plan.device.bandwidth / GB:,.0f} GB/s",
              f"the run: {plan.sgd_steps:,} SGD steps, {plan.run_flops:.3g} FLOP (acting "
              f"included), {_duration(plan.run_seconds)} (a prediction; env physics not "
              f"counted)"]
    return lines


def _local_device(batch: int, width: int) -> Device:
    """This machine's first device: its memory where JAX reports it (else the host's), its
    matrix-product rate at the run's batch and width, and its bandwidth, both measured."""
    from crl.train import device_memory

    device = jax.devices()[0]
    memory = device_memory(device) or float(os.sysconf("SC_PAGE_SIZE")
                                            * os.sysconf("SC_PHYS_PAGES"))
    rate = rates.matmul_flops_per_second(batch, width, 3)
    bandwidth = rates.stream_bytes_per_second(3)
    return Device(memory, rate, rate, bandwidth, f"{device.platform} {device.device_kind} "
                  f"(measured {rate / 1e9:.0f} GFLOP/s, {bandwidth / GB:.0f} GB/s)")


def xla_step_bytes(config: Config) -> float:
    """XLA's temporaries of one compiled SGD step of ``config`` on this machine's first device,
    from abstract shapes (nothing is allocated)."""
    from crl.train import Trainer

    trainer = Trainer(dataclasses.replace(config, seeds=()), jax.devices()[:1])
    state = trainer.init_shapes(jax.random.PRNGKey(0))
    batches = trainer.batch_shapes(1)
    compiled = trainer.sgd_steps.lower(state, batches, jax.random.PRNGKey(1)).compile()
    return float(compiled.memory_analysis().temp_size_in_bytes)


def main(argv: list[str] | None = None) -> Plan:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m crl.plan", description=__doc__.split(
        "\n\n")[0], epilog="Every other option is a python -m crl.train option.")
    parser.add_argument("--gpu", "--tpu", dest="device", default="local",
                        help=f"the device: {', '.join(DEVICES)} or local (this machine's)")
    parser.add_argument("--devices", type=int, default=1, help="devices of the run")
    parser.add_argument("--peak-fraction", type=float, default=None,
                        help=f"fraction of the peak FLOP/s the products reach (default "
                        f"{DEFAULT_PEAK_FRACTION}; 1 for local, whose rate is measured)")
    parser.add_argument("--bandwidth-fraction", type=float, default=None,
                        help=f"fraction of the memory bandwidth the elementwise work reaches "
                        f"(default {DEFAULT_BANDWIDTH_FRACTION}; 1 for local)")
    parser.add_argument("--compile", action="store_true",
                        help="also compile the SGD step here and print XLA's memory figure")
    args, train_argv = parser.parse_known_args(argv)
    if args.device != "local" and args.device not in DEVICES:
        fail(f"device {args.device!r} is unknown; valid: {', '.join(DEVICES)}, local")
    if args.devices < 1:
        fail(f"--devices {args.devices} must be at least 1")
    for name in ("peak_fraction", "bandwidth_fraction"):
        value = getattr(args, name)
        if value is not None and not 0 < value <= 1:
            fail(f"--{name.replace('_', '-')} {value} must be in (0, 1]")
    config = parse_args(train_argv)
    local = args.device == "local"
    device = (_local_device(config.batch_size, config.width) if local
              else DEVICES[args.device])
    available = device.memory * (1 if local else GPU_MEMORY_FRACTION)
    fraction = lambda value, default: value if value is not None else (1.0 if local else default)
    plan = make_plan(config, device, args.devices,
                     fraction(args.peak_fraction, DEFAULT_PEAK_FRACTION), available,
                     fraction(args.bandwidth_fraction, DEFAULT_BANDWIDTH_FRACTION))
    xla = xla_step_bytes(plan.config) if args.compile else None
    print("\n".join(describe(plan, args.devices, xla)))
    return plan


if __name__ == "__main__":
    main()
