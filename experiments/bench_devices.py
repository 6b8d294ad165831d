"""SGD steps per second on 1, 2, 4, ... devices at a fixed global batch.

    python experiments/bench_devices.py [--devices 1 2 4] [--depth 8] [--batch-size 512]

On a CPU the devices are forced with XLA_FLAGS (set here before JAX starts), so they share the
machine's cores and the point is the shape of the scaling, not a speed-up; on a GPU node use the
real devices. The update is the one training runs (actor, temperature and critic, losses averaged
over devices, representations gathered for the contrastive loss), fed the same random batches.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--env", default="ant_u_maze")
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20, help="SGD steps per timed call")
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args()


def main() -> None:
    args = parse()
    if "cpu" in os.environ.get("JAX_PLATFORMS", "cpu"):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + f" --xla_force_host_platform_device_count={max(args.devices)}")
    import jax

    from crl.config import Config, validate
    from crl.envs import make_env
    from crl.train import Trainer

    config = validate(Config(env=args.env, depth=args.depth, width=args.width,
                             batch_size=args.batch_size, num_envs=max(args.devices),
                             num_eval_envs=max(args.devices), compile_cache=""))
    print(f"{jax.device_count()} {jax.devices()[0].platform} devices available; env {args.env}, "
          f"depth {args.depth}, width {args.width}, global batch {args.batch_size}, "
          f"{args.steps} SGD steps per call, best of {args.repeats}")
    env = make_env(config.env)
    rng = np.random.default_rng(0)
    shape = (args.steps, args.batch_size)
    batches = {"state": rng.normal(size=(*shape, env.state_size)),
               "action": rng.uniform(-1, 1, (*shape, env.action_size)),
               "goal": rng.normal(size=(*shape, env.goal_size))}
    batches = {k: v.astype(np.float32) for k, v in batches.items()}

    print(f"{'devices':>7} {'local batch':>11} {'SGD steps/s':>11} {'vs 1 device':>11}")
    reference = None
    for count in args.devices:
        trainer = Trainer(config, devices=jax.devices()[:count])
        key = jax.random.PRNGKey(0)
        state = trainer.init(key)
        state, _ = trainer.sgd_steps(state, batches, key)  # compile and warm up
        jax.block_until_ready(state)
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            state, metrics = trainer.sgd_steps(state, batches, key)
            jax.block_until_ready(metrics)
            best = min(best, time.perf_counter() - start)
        rate = args.steps / best
        reference = reference or rate
        print(f"{count:>7} {args.batch_size // count:>11} {rate:>11.1f} {rate / reference:>10.2f}x")


if __name__ == "__main__":
    main()
