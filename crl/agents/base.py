"""What every agent shares: the interface the runner calls, and the helpers of its updates.

An agent is a frozen description of one algorithm built from a resolved ``Config`` and the env's
sizes. The runner (crl/train.py) knows it only through:

- ``sampling``: the fields of its batches and how their goals are chosen (``crl.buffer``);
- ``init(key)``: its state, a pytree (a ``flax.struct`` dataclass) whose ``params`` field holds
  every network's parameters. Checkpoints store ``params`` apart (evaluation reads only them)
  and the rest of the state as one pytree, so an agent needs no checkpoint code;
- ``update(state, batch, key)``: one SGD step on this device's share of a global batch, inside
  ``shard_map``: average every loss over the device axis (``pmean``) before differentiating,
  so that the gradients are those of the global batch on every device;
- ``act(params, state, goal, key)``: an action per row, sampled for collection, or the
  deterministic one for evaluation when ``key`` is None;
- ``q_value(params, state, action, goal)``: the critic's Q, for agents that have a critic
  (``has_critic``), which Q-value maps draw;
- ``network_inputs(batch)`` (and ``representations``): each residual network and what it reads
  on a batch, for the per-block health of ``crl.diagnostics``; an update adds the health of
  its step with ``self.block_health(grads, params_before, params_after)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax

from crl import diagnostics
from crl.buffer import Sampling
from crl.config import Config
from crl.distributed import AXIS
from crl.networks.actors import TanhGaussianActor
from crl.networks.critics import TwinQ
from crl.networks.mlp import ResidualMLP

Params = dict[str, Any]
Metrics = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class EnvSizes:
    state_size: int
    goal_size: int
    action_size: int


@dataclasses.dataclass(frozen=True)
class Agent:
    config: Config
    sizes: EnvSizes
    num_devices: int = 1

    has_critic: ClassVar[bool] = True
    # For crl.plan's cost model: per network family ("actor", "critic"), how many passes of one
    # SGD step go through a network of that family: (passes whose weights are trained, passes
    # differentiated for their inputs only, forward passes without gradients).
    network_passes: ClassVar[dict[str, tuple[int, int, int]]] = {}

    @property
    def local_batch(self) -> int:
        return self.config.batch_size // self.num_devices

    def mlp(self, family: str, out_dim: int) -> ResidualMLP:
        """crl's one residual MLP for a network of ``family`` ("actor" or "critic"): that
        family's depth, width, skip connections, LayerNorm and activation, and the run's remat
        mode and compute dtype."""
        cfg = self.config
        option = lambda name: getattr(cfg, f"{family}_{name}")
        return ResidualMLP(depth=option("depth"), width=option("width"), out_dim=out_dim,
                           remat=cfg.remat, dtype=jnp.dtype(cfg.compute_dtype),
                           residual=option("residual"), layer_norm=option("layer_norm"),
                           activation=option("activation"))

    def tanh_gaussian_actor(self) -> TanhGaussianActor:
        sizes = self.sizes
        return TanhGaussianActor(self.mlp("actor", 2 * sizes.action_size), sizes.state_size,
                                 sizes.goal_size)

    def twin_critic(self) -> TwinQ:
        sizes = self.sizes
        return TwinQ(self.mlp("critic", 1), sizes.state_size, sizes.action_size,
                     sizes.goal_size)

    def adam(self, *names: str) -> dict[str, optax.GradientTransformation]:
        """An Adam optimiser per name, at the config's ``<name>_lr``."""
        return {name: optax.adam(getattr(self.config, f"{name}_lr")) for name in names}

    @property
    def sampling(self) -> Sampling:
        raise NotImplementedError

    def init(self, key: jax.Array) -> Any:
        raise NotImplementedError

    def update(self, state: Any, batch: dict[str, jax.Array],
               key: jax.Array) -> tuple[Any, Metrics]:
        raise NotImplementedError

    def act(self, params: Params, state: jax.Array, goal: jax.Array,
            key: jax.Array | None) -> jax.Array:
        raise NotImplementedError

    def q_value(self, params: Params, state: jax.Array, action: jax.Array,
                goal: jax.Array) -> jax.Array:
        raise NotImplementedError(f"agent {self.config.agent!r} has no critic")

    def best_action(self, params: Params, state: jax.Array, goal: jax.Array,
                    actions: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Per row, the action of highest Q among candidates ``[K, rows, action]``, and its Q."""
        q = jax.vmap(lambda action: self.q_value(params, state, action, goal))(actions)
        best = jnp.argmax(q, axis=0)
        return (jnp.take_along_axis(actions, best[None, :, None], axis=0)[0],
                jnp.take_along_axis(q, best[None], axis=0)[0])

    def best_of(self, params: Params, state: jax.Array, goal: jax.Array, key: jax.Array,
                samples: int) -> jax.Array:
        """Per row, the action of highest Q among ``samples`` drawn from the policy."""
        actions = jax.vmap(lambda k: self.act(params, state, goal, k))(
            jax.random.split(key, samples))
        return self.best_action(params, state, goal, actions)[0]

    def select_action(self, params: Params, state: jax.Array, goal: jax.Array,
                      key: jax.Array | None, samples: int = 1) -> jax.Array:
        """How the runner acts: the deterministic action when ``key`` is None, else one
        sampled action, or the best under the critic of ``samples`` of them."""
        if samples > 1:
            return self.best_of(params, state, goal, key, samples)
        return self.act(params, state, goal, key)

    def temperature(self, log_alpha: jax.Array) -> jax.Array:
        """The entropy bonus's weight: exp(log_alpha), or 0 with --no-entropy."""
        return jnp.exp(log_alpha) if self.config.entropy else jnp.zeros_like(log_alpha)

    def step_temperature(self, optimizer: optax.GradientTransformation, log_alpha: jax.Array,
                         grad: jax.Array, opt_state: optax.OptState
                         ) -> tuple[jax.Array, optax.OptState]:
        """The temperature's update; with --no-entropy it stays where it is, unused."""
        if not self.config.entropy:
            return log_alpha, opt_state
        return apply_gradients(optimizer, log_alpha, grad, opt_state)

    def network_inputs(self, batch: dict[str, jax.Array]) -> dict[str, tuple[ResidualMLP,
                                                                           jax.Array]]:
        """Every residual network, by its path in ``params``, with what it reads on ``batch``."""
        raise NotImplementedError

    def representations(self, params: Params, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Named representations of ``batch`` whose norm and rank the diagnostics follow."""
        return {}

    def forward_health(self, params: Params, batch: dict[str, jax.Array]) -> Metrics:
        """``diag/...`` of one forward pass of every network on ``batch`` (crl.diagnostics)."""
        # Every device computes the same figures; pmean types them as replicated.
        return pmean(diagnostics.network_health(self.network_inputs(batch), params,
                                                self.representations(params, batch)))

    # ------------------------------------------------------------ helpers of the updates
    def block_health(self, grads: Params, before: Params, after: Params) -> Metrics:
        """``diag/...`` gradient norm and update ratio per block of one step, if enabled."""
        if not self.config.diagnostics:
            return {}
        return pmean(diagnostics.block_health(grads, before, after))

    def global_normal(self, key: jax.Array, size: int) -> jax.Array:
        """Standard normal noise ``[local_batch, size]``: this device's rows of noise drawn
        for the global batch, so that a run's numbers do not depend on the device count."""
        noise = jax.random.normal(key, (self.config.batch_size, size))
        return jax.lax.dynamic_slice_in_dim(noise, jax.lax.axis_index(AXIS) * self.local_batch,
                                            self.local_batch)


def pmean(x: Any) -> Any:
    """The mean over the devices' shares of the global batch."""
    return jax.lax.pmean(x, AXIS)


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """The mean of ``values`` over the rows of the global batch where ``mask`` holds."""
    mask = mask.astype(values.dtype)
    total = jax.lax.psum(jnp.sum(values * mask), AXIS)
    return total / jnp.maximum(jax.lax.psum(jnp.sum(mask), AXIS), 1.0)


def apply_gradients(optimizer: optax.GradientTransformation, params: Any, grads: Any,
                    opt_state: optax.OptState) -> tuple[Any, optax.OptState]:
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def polyak(target: Any, online: Any, tau: float) -> Any:
    """Target networks move a fraction ``tau`` of the way to the online ones."""
    return jax.tree.map(lambda t, o: (1 - tau) * t + tau * o, target, online)


def where(condition: jax.Array, new: Any, old: Any) -> Any:
    """``new`` where ``condition`` holds, else ``old``, leaf by leaf (delayed updates)."""
    return jax.tree.map(lambda n, o: jnp.where(condition, n, o), new, old)
