"""Rates measured on this machine, in this process: how long a call takes, the matrix-product
rate and the memory bandwidth the planner's model of a step is calibrated against."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def best_time(run: Callable[[], Any], repeats: int) -> float:
    """Fastest of ``repeats`` timed calls of ``run`` (which must block until done)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_flops_per_second(batch: int, width: int, repeats: int) -> float:
    """This process's rate for a chain of [batch, width] x [width, width] products."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, width)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(width, width)) / np.sqrt(width), jnp.float32)
    count = 256
    chain = jax.jit(lambda x, w: jax.lax.fori_loop(0, count, lambda _, h: h @ w, x))
    jax.block_until_ready(chain(x, w))
    # A short measurement: take the best of many, so that a busy moment cannot set the peak.
    seconds = best_time(lambda: jax.block_until_ready(chain(x, w)), 4 * repeats)
    return count * 2.0 * batch * width**2 / seconds


def stream_bytes_per_second(repeats: int) -> float:
    """This process's memory bandwidth: a chain of ``h * a + b`` over arrays too large for the
    caches (three read, one written per link)."""
    rng = np.random.default_rng(0)
    x, a, b = (jnp.asarray(rng.normal(size=(4096, 2048)), jnp.float32) for _ in range(3))
    count = 16
    chain = jax.jit(lambda x, a, b: jax.lax.fori_loop(0, count, lambda _, h: h * a + b, x))
    jax.block_until_ready(chain(x, a, b))
    seconds = best_time(lambda: jax.block_until_ready(chain(x, a, b)), 2 * repeats)
    return count * 4 * x.size * x.dtype.itemsize / seconds
