"""What depth costs, measured against this machine's own limits: ``python -m crl.bench``.

Seven tables, each row with its figure and a ratio to a reference measured in the same process:

- compile: seconds to trace and compile one training epoch, by depth (ratio to depth 4);
- sgd: time of one SGD step by depth, batch and remat mode (ratio to its matrix products at
  the rate of a dense matmul of the same width and batch, and to crl.plan's prediction from
  that rate and the memory bandwidth, both timed here);
- relabel: hindsight relabelling of 512 windows by window length (ratio to half the length);
- e2e: env steps/s and SGD steps/s of whole training epochs (ratios to collection alone and
  to SGD alone);
- memory: bytes of activations and temporaries of one SGD step by depth and remat mode (ratio
  to storing everything);
- seeds: seeds vectorised in one program against one after another;
- diagnostics: the epoch time with the per-block diagnostics against without them.

``--quick`` runs a reduced set in about 2 minutes on 2 CPU cores. Results are also written as
JSON (``--json``). The persistent compilation cache is off, so compile times are real.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crl import buffer, plan
from crl.agents import AGENT_NAMES
from crl.config import PRESETS, Config, validate
from crl.rates import best_time, matmul_flops_per_second, stream_bytes_per_second
from crl.train import Trainer, spread_seeds_over_cpu_cores


@dataclasses.dataclass
class Table:
    name: str
    title: str
    columns: list[str]
    rows: list[list[Any]] = dataclasses.field(default_factory=list)
    note: str = ""

    def show(self) -> None:
        cells = [self.columns] + [[_format(v) for v in row] for row in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        print(f"\n## {self.title}")
        for row in cells:
            print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        if self.note:
            print(self.note)

    def as_json(self) -> dict[str, Any]:
        return {"title": self.title, "note": self.note,
                "rows": [dict(zip(self.columns, row, strict=True)) for row in self.rows]}


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def best_chained_time(step: Callable[[Any], Any], state: Any, repeats: int) -> float:
    """Fastest of ``repeats`` calls ``state = step(state)`` after one untimed call (compiling).
    Each call gets the state the previous one returned, since the compiled steps donate it."""
    state = jax.block_until_ready(step(state))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state = jax.block_until_ready(step(state))
        times.append(time.perf_counter() - start)
    return min(times)


def one_device() -> list:
    """The device of every part but the seeds part: one program, one device."""
    return jax.devices()[:1]


def bench_config(env: str = "point_u_maze", depth: int = 4, **overrides: Any) -> Config:
    """The paper's network sizes (width 256, batch 512) on a small env count: what is timed is
    the networks, not the envs, unless the part says otherwise."""
    fields = {"env": env, "depth": depth, "width": 256, "batch_size": 512, "num_envs": 8,
              "episode_length": 250, "num_eval_envs": 8, "compile_cache": ""} | overrides
    return validate(Config(**fields))


def random_batches(trainer: Trainer, num_batches: int, batch_size: int) -> dict[str, np.ndarray]:
    env, rng = trainer.goal_env, np.random.default_rng(0)
    shape = (num_batches, batch_size)
    return {"state": rng.normal(size=(*shape, env.state_size)).astype(np.float32),
            "action": rng.uniform(-1, 1, (*shape, env.action_size)).astype(np.float32),
            "goal": rng.normal(size=(*shape, env.goal_size)).astype(np.float32)}


# ------------------------------------------------------------------------------------ compile
def compile_part(depths: list[int], envs: list[str], agents: list[str]) -> Table:
    table = Table("compile", "Compile time of one training epoch",
                  ["env", "agent", "depth", "seconds", "vs first depth"])
    for env, agent in itertools.product(envs, agents):
        reference = None
        for depth in depths:
            trainer = Trainer(bench_config(env, depth, agent=agent), one_device())
            abstract_state = trainer.init_shapes(jax.random.PRNGKey(0))
            start = time.perf_counter()
            trainer.train_epoch.lower(abstract_state).compile()
            seconds = time.perf_counter() - start
            reference = reference or seconds
            table.rows.append([env, agent, depth, seconds, seconds / reference])
    table.note = ("Tracing and XLA compilation of the whole epoch (collect, replay, relabel, "
                  "SGD). The residual blocks are one scan, so depth only changes array sizes.")
    return table


# ---------------------------------------------------------------------------------------- sgd
def sgd_part(cases: list[tuple[int, int, str]], steps: int, repeats: int) -> Table:
    """``cases``: (depth, batch, remat) of each row."""
    table = Table("sgd", "SGD step time against crl.plan's model (width 256)",
                  ["depth", "batch", "remat", "ms/step", "GFLOP/step", "vs matmul",
                   "plan ms/step", "vs plan"])
    for depth, batch, remat in cases:
        rate = matmul_flops_per_second(batch, 256, repeats)
        device = plan.Device(0.0, rate, rate, stream_bytes_per_second(repeats), "here")
        config = bench_config(depth=depth, batch_size=batch, remat=remat)
        predicted = plan.make_plan(config, device, peak_fraction=1.0, bandwidth_fraction=1.0)
        trainer = Trainer(config, one_device())
        batches, key = random_batches(trainer, steps, batch), jax.random.PRNGKey(1)
        seconds = best_chained_time(
            lambda state, trainer=trainer, batches=batches, key=key:
            trainer.sgd_steps(state, batches, key)[0],
            trainer.init(jax.random.PRNGKey(0)), repeats) / steps
        matmul_seconds = predicted.step_flops / rate
        model_seconds = sum(predicted.step_seconds)
        table.rows.append([depth, batch, remat, 1e3 * seconds, predicted.step_flops / 1e9,
                           seconds / matmul_seconds, 1e3 * model_seconds,
                           seconds / model_seconds])
    table.note = ("vs matmul: the step's time against its matrix products (crl.plan's count) "
                  "at the rate of a chain of [batch, 256] x [256, 256] products timed in this "
                  "process; plan: crl.plan's time at that rate plus its memory traffic at the "
                  "streaming bandwidth measured here.")
    return table


# ------------------------------------------------------------------------------------ relabel
def relabel_part(lengths: list[int], num_envs: int, repeats: int) -> Table:
    table = Table("relabel", f"Hindsight relabelling of {num_envs} windows",
                  ["window", "ms", "vs half the window"])
    rng = np.random.default_rng(0)
    relabel = jax.jit(lambda key, traj_id: buffer.relabel(key, traj_id, 0.99))
    previous = None
    for length in lengths:
        # Episodes of 1000 steps, each window starting at a random point of one.
        offsets = rng.integers(0, 1000, (num_envs, 1))
        traj_id = jnp.asarray((offsets + np.arange(length)) // 1000, jnp.int32)
        key = jax.random.PRNGKey(0)
        jax.block_until_ready(relabel(key, traj_id))
        seconds = best_time(lambda k=key, i=traj_id: jax.block_until_ready(relabel(k, i)),
                            repeats)
        table.rows.append([length, 1e3 * seconds, seconds / previous if previous else 1.0])
        previous = seconds
    table.note = ("The goal step of every step of every window (crl.buffer.relabel); batches "
                  "then read only the states they use. O(L) per window: each doubling should "
                  "cost about 2x (an L x L probability matrix would cost 4x).")
    return table


# ---------------------------------------------------------------------------------------- e2e
def e2e_part(envs: list[str], depths: list[int], repeats: int) -> Table:
    table = Table("e2e", "Whole training epochs", ["env", "depth", "env steps/s", "SGD steps/s",
                                                   "vs collect only", "vs SGD only"])
    num_envs, unroll, batches_per_step, training_steps = 64, 20, 16, 2
    for env in envs:
        for depth in depths:
            config = bench_config(
                env, depth, num_envs=num_envs, unroll_length=unroll, episode_length=100,
                batch_size=256, min_replay_size=100, max_replay_size=1000, num_epochs=1,
                num_sgd_batches_per_training_step=batches_per_step,
                total_env_steps=100 * num_envs + training_steps * num_envs * unroll)
            trainer = Trainer(config, one_device())
            state = trainer.init(jax.random.PRNGKey(0))
            prefill_steps = config.prefill_unrolls * unroll * num_envs
            collect_rate = prefill_steps / best_chained_time(trainer.prefill, state, repeats)
            state = trainer.prefill(trainer.init(jax.random.PRNGKey(0)))
            seconds = best_chained_time(lambda state, t=trainer: t.train_epoch(state)[0], state,
                                        repeats)
            sgd_count = training_steps * config.sgd_batches_per_training_step
            batches = random_batches(trainer, sgd_count, config.batch_size)
            sgd_rate = sgd_count / best_chained_time(
                lambda state, t=trainer, b=batches: t.sgd_steps(state, b, jax.random.PRNGKey(1))[0],
                trainer.init(jax.random.PRNGKey(0)), repeats)
            env_rate = training_steps * num_envs * unroll / seconds
            table.rows.append([env, depth, env_rate, sgd_count / seconds,
                               env_rate / collect_rate, sgd_count / seconds / sgd_rate])
    table.note = (f"{num_envs} envs, unroll {unroll}, batch 256, {batches_per_step} SGD steps per "
                  f"training step, {training_steps} training steps per epoch, width 256. "
                  "Collect only: the prefill (acting and replay insertion, no SGD); SGD only: "
                  "the same number of SGD steps on ready batches. An epoch does both, so each "
                  "ratio is the share of the epoch's time that the other part leaves.")
    return table


# ------------------------------------------------------------------------------------- memory
def memory_part(depths: list[int], modes: list[str], batch: int) -> Table:
    table = Table("memory", f"Memory of one SGD step (batch {batch}, width 256)",
                  ["depth", "remat", "activations+temps MB", "params+opt MB", "vs none"])
    for depth in depths:
        reference = None
        for mode in ["none", *[m for m in modes if m != "none"]]:
            trainer = Trainer(bench_config(depth=depth, batch_size=batch, remat=mode),
                              one_device())
            abstract_state = trainer.init_shapes(jax.random.PRNGKey(0))
            batches = random_batches(trainer, 1, batch)
            compiled = trainer.sgd_steps.lower(abstract_state, batches,
                                               jax.random.PRNGKey(1)).compile()
            memory = compiled.memory_analysis()
            temps = memory.temp_size_in_bytes
            state_bytes = sum(x.size * x.dtype.itemsize
                              for x in jax.tree.leaves(abstract_state.agent))
            reference = reference or temps
            table.rows.append([depth, mode, temps / 1e6, state_bytes / 1e6, temps / reference])
    table.note = ("XLA's buffer assignment for the compiled step: temporaries are everything "
                  "beyond its inputs and outputs (activations kept for the backward pass, "
                  "gradients, Adam's intermediates).")
    return table


# ------------------------------------------------------------------------------------- seeds
def seeds_part(cases: list[str], num_seeds: int, steps_per_epoch: int, repeats: int) -> Table:
    table = Table("seeds", f"{num_seeds} seeds vectorised (--seeds) against one after another",
                  ["case", "compile one s", f"compile {num_seeds} s", "one epoch s",
                   f"{num_seeds} one after another s", f"{num_seeds} vectorised s",
                   "vectorised / one after another"])
    seeds = tuple(range(num_seeds))
    for case in cases:
        config = seeds_bench_config(case, steps_per_epoch)
        single = Trainer(config, one_device())
        group = Trainer(dataclasses.replace(config, seeds=seeds))  # the devices crl.train uses
        compile_s, epochs = [], []
        for trainer in (single, group):
            state = trainer.prefill(trainer.init(trainer.init_key()))
            start = time.perf_counter()
            epochs.append(trainer.train_epoch.lower(state).compile())
            compile_s.append(time.perf_counter() - start)
        single_epoch, group_epoch = epochs
        states = [single.prefill(single.init(jax.random.PRNGKey(seed))) for seed in seeds]

        def one_after_another(states, epoch=single_epoch):
            return [epoch(state)[0] for state in states]

        sequential = best_chained_time(one_after_another, states, repeats)
        vectorised = best_chained_time(lambda state, epoch=group_epoch: epoch(state)[0],
                                       group.prefill(group.init(group.init_key())), repeats)
        table.rows.append([case, *compile_s, sequential / num_seeds, sequential, vectorised,
                           vectorised / sequential])
    table.note = (f"One epoch of {steps_per_epoch} training steps per seed (collection, replay, "
                  "SGD), after the prefill; point_u_maze with the point_quick preset, ant_u_maze "
                  "with 64 envs, depth 4, batch 256. One after another: the one-seed program "
                  f"run on each of the {num_seeds} seeds' states in turn, on one device; "
                  "vectorised: on the devices python -m crl.train --seeds uses (on a CPU, one "
                  "per core that divides the seeds).")
    return table


def seeds_bench_config(case: str, steps_per_epoch: int) -> Config:
    """The two settings of the seeds benchmark, ``steps_per_epoch`` training steps an epoch."""
    if case == "point_u_maze":
        config = PRESETS["point_quick"]
    else:
        config = dataclasses.replace(
            Config(), env=case, depth=4, num_envs=64, batch_size=256, unroll_length=20,
            episode_length=100, min_replay_size=100, max_replay_size=1000,
            num_sgd_batches_per_training_step=16, num_eval_envs=64)
    config = dataclasses.replace(config, num_epochs=1, total_env_steps=(
        config.min_replay_size * config.num_envs
        + steps_per_epoch * config.num_envs * config.unroll_length))
    return validate(dataclasses.replace(config, render=False, compile_cache=""))


# ------------------------------------------------------------------------------- diagnostics
def diagnostics_part(depths: list[int], training_steps: int, repeats: int) -> Table:
    table = Table("diagnostics", "Per-block diagnostics: training epochs with and without",
                  ["depth", "epoch s without", "epoch s with", "with / without",
                   "compile s without", "compile s with"])
    num_envs, unroll, batches_per_step = 64, 20, 16
    for depth in depths:
        config = bench_config(
            "point_u_maze", depth, num_envs=num_envs, unroll_length=unroll, episode_length=100,
            batch_size=256, min_replay_size=100, max_replay_size=1000, num_epochs=1,
            num_sgd_batches_per_training_step=batches_per_step,
            total_env_steps=100 * num_envs + training_steps * num_envs * unroll)
        epochs, states, compile_s = [], [], []
        for diagnostics in (False, True):
            trainer = Trainer(dataclasses.replace(config, diagnostics=diagnostics), one_device())
            state = trainer.prefill(trainer.init(jax.random.PRNGKey(0)))
            start = time.perf_counter()
            epochs.append(trainer.train_epoch.lower(state).compile())
            compile_s.append(time.perf_counter() - start)
            states.append(jax.block_until_ready(epochs[-1](state)[0]))
        best = [float("inf")] * 2
        for _ in range(repeats):  # alternated, so that both see the same machine
            for index in (0, 1):
                start = time.perf_counter()
                states[index] = jax.block_until_ready(epochs[index](states[index])[0])
                best[index] = min(best[index], time.perf_counter() - start)
        table.rows.append([depth, *best, best[1] / best[0], *compile_s])
    table.note = (f"point_u_maze, {num_envs} envs, unroll {unroll}, batch 256, width 256, "
                  f"{training_steps} training steps of {batches_per_step} SGD steps per epoch. "
                  "With: gradient norm and update ratio per block at every SGD step, one "
                  "forward pass of every network per epoch for activations, dormant units and "
                  "ranks. Best of the repeats, alternated.")
    return table


PARTS = ("compile", "sgd", "relabel", "e2e", "memory", "seeds", "diagnostics")
SEEDS_BENCHMARKED = 4


def run(quick: bool, parts: tuple[str, ...], agents: tuple[str, ...] = ("crl",)) -> list[Table]:
    repeats = 2 if quick else 3
    plans: dict[str, Callable[[], Table]] = {
        "compile": lambda: compile_part([4, 1024] if quick else [4, 16, 64, 256, 1024],
                                        ["point_u_maze"] if quick else
                                        ["point_u_maze", "ant_u_maze"], list(agents)),
        "sgd": lambda: sgd_part(
            [(4, 512, "elementwise"), (64, 512, "elementwise")] if quick else
            [*itertools.product([4, 16, 64, 256], [256, 512, 1024], ["elementwise"]),
             *itertools.product([16, 64], [512], ["none", "blocks"])],
            4 if quick else 8, repeats),
        "relabel": lambda: relabel_part([250, 500, 1000, 2000], 512, 3 if quick else 10),
        "e2e": lambda: e2e_part(["point_u_maze"] if quick else ["point_u_maze", "ant_u_maze"],
                                [4] if quick else [4, 64], repeats),
        "seeds": lambda: seeds_part(["point_u_maze"] if quick else
                                    ["point_u_maze", "ant_u_maze"], SEEDS_BENCHMARKED,
                                    4 if quick else 8, repeats),
        "diagnostics": lambda: diagnostics_part([4, 64], 4, 3 if quick else 5),
        "memory": lambda: memory_part([64, 1024] if quick else [4, 64, 256, 1024],
                                      ["blocks"] if quick else ["elementwise", "blocks"], 512),
    }
    tables = []
    for part in parts:
        table = plans[part]()
        table.show()
        tables.append(table)
    return tables


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m crl.bench", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a reduced set (about 2 minutes)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--agents", nargs="+", choices=AGENT_NAMES, default=["crl"],
                        help="agents whose compile time is measured (default: crl)")
    parser.add_argument("--json", type=Path, default=None,
                        help="where to write the results (default: bench-<time>.json here)")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_compilation_cache", False)
    if "seeds" in args.parts:
        spread_seeds_over_cpu_cores(SEEDS_BENCHMARKED)
    print(f"crl.bench on {jax.device_count()} {jax.devices()[0].platform} device(s) "
          f"({platform.processor() or platform.machine()}), jax {jax.__version__}"
          f"{', quick' if args.quick else ''}")
    start = time.perf_counter()
    tables = run(args.quick, tuple(args.parts), tuple(args.agents))
    seconds = time.perf_counter() - start
    print(f"\n{seconds:.0f} s in all")
    path = args.json or Path(f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json")
    path.write_text(json.dumps({"quick": args.quick, "seconds": seconds,
                                "devices": [str(d) for d in jax.devices()],
                                **{t.name: t.as_json() for t in tables}}, indent=2) + "\n")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
