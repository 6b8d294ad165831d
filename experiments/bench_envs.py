"""Environment steps per second of each task, at a few numbers of parallel envs.

    python experiments/bench_envs.py                    # one env per kind, 1/16/128 envs
    python experiments/bench_envs.py --quick            # three envs, 1/16 envs, short runs
    python experiments/bench_envs.py --names ant,ant_push --num-envs 256 --backend mjx

Envs step in lockstep under ``EpisodeBatch`` (random actions, episodes restart as in training),
inside one compiled ``lax.scan``. The reference, measured in the same run at the largest number
of envs, is Brax's own env of the same robot and pipeline stepped the same way; the ratio shows
what the goal-conditioning, walls and objects cost. Compile time is printed apart.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's crl

import jax

from crl import envs
from crl.envs.wrappers import EpisodeBatch
from crl.train import compiler_options, timed_compile

KINDS = ("reacher", "pusher_easy", "cheetah", "ant", "ant_ball", "ant_push", "ant_u_maze",
         "ant_hardest_maze", "humanoid", "humanoid_u_maze", "humanoid_hardest_maze",
         "point_u_maze")
QUICK = ("reacher", "ant_u_maze", "humanoid_u_maze")
# Brax's env of the same robot: the reference (none for the pure-JAX point maze).
BRAX_ROBOT = {"reacher": "reacher", "pusher": "pusher", "cheetah": "halfcheetah", "ant": "ant",
              "humanoid": "humanoid"}


def steps_per_second(env, num_envs: int, steps: int, repeats: int) -> tuple[float, float]:
    """(env steps per second, compile seconds) of ``steps`` lockstep steps of ``num_envs``."""
    batch = EpisodeBatch(env, episode_length=1000)

    def run(key):
        state = batch.reset(jax.random.split(key, num_envs))

        def step(state, key):
            action = jax.random.uniform(key, (num_envs, env.action_size), minval=-1, maxval=1)
            return batch.step(state, action), None

        state, _ = jax.lax.scan(step, state, jax.random.split(key, steps))
        return state.obs

    options = compiler_options(getattr(env, "backend", None), jax.default_backend())
    compiled, compile_s = timed_compile(jax.jit(run), jax.random.PRNGKey(0),
                                        compiler_options=options)
    jax.block_until_ready(compiled(jax.random.PRNGKey(0)))  # warm up
    best = float("inf")
    for repeat in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(jax.random.PRNGKey(repeat + 1)))
        best = min(best, time.perf_counter() - start)
    return num_envs * steps / best, compile_s


def brax_reference(name: str, backend: str | None):
    robot = next((BRAX_ROBOT[k] for k in BRAX_ROBOT if name.startswith(k)), None)
    if robot is None or backend is None:
        return None, None
    import brax.envs

    return robot, brax.envs.get_environment(robot, backend=backend)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", default="", help="comma-separated envs, or 'all'")
    parser.add_argument("--num-envs", default="", help="comma-separated (default 1,16,128)")
    parser.add_argument("--steps", type=int, default=100, help="lockstep steps per timing")
    parser.add_argument("--backend", default=None, help="Brax pipeline (default: each env's)")
    parser.add_argument("--quick", action="store_true", help="3 envs, 1 and 16 envs, 20 steps")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Brax System, piplines")
    names = (args.names.split(",") if args.names not in ("", "all")
             else list(envs.REGISTRY) if args.names == "all" else QUICK if args.quick else KINDS)
    sizes = [int(n) for n in (args.num_envs.split(",") if args.num_envs
                              else ["1", "16"] if args.quick else ["1", "16", "128"])]
    steps, repeats = (20, 2) if args.quick else (args.steps, 3)

    print(f"{jax.devices()[0].platform} x{len(jax.devices())}, {steps} steps per timing, best "
          f"of {repeats}; env steps per second (compile seconds)")
    header = f"{'env':22s} {'backend':11s}" + "".join(f"{f'{n} envs':>20s}" for n in sizes)
    print(header + f"  {'reference at ' + str(sizes[-1]) + ' envs':>40s}")
    for name in names:
        spec = envs.get_spec(name)
        backend = (args.backend or spec.default_backend) if spec.default_backend else None
        env = spec.make(backend)
        cells = []
        for num_envs in sizes:
            rate, compile_s = steps_per_second(env, num_envs, steps, repeats)
            cells.append(f"{rate:>11,.0f} ({compile_s:4.0f}s)")
        line = f"{name:22s} {backend or 'pure JAX':11s}" + "".join(f"{c:>20s}" for c in cells)
        robot, reference = brax_reference(name, backend)
        if reference is not None:
            ref_rate, _ = steps_per_second(reference, sizes[-1], steps, repeats)
            line += f"  {f'brax {robot} {ref_rate:,.0f}/s, ours x{rate / ref_rate:.2f}':>40s}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
