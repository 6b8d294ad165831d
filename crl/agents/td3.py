"""TD3 (Fujimoto et al. 2018) on goal-conditioned observations, with optional HER.

Same sparse reward, batches and twin critics as ``crl.agents.sac``, with a deterministic actor
pi(s, g) = tanh(f(s, g)). The critics regress onto r + discount * min_i Q'_i(s', a'), where
a' = clip(pi'(s') + clip(N(0, policy_noise), -noise_clip, noise_clip), -1, 1) smooths the target
policy pi'; the actor maximises Q_1(s, pi(s)) and, like the target networks, is updated only
every ``policy_delay`` critic updates. Collection adds N(0, exploration_noise) to pi's action.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
import optax
from flax import struct

from crl.agents.base import (
    Agent,
    Metrics,
    Params,
    apply_gradients,
    masked_mean,
    pmean,
    polyak,
    where,
)
from crl.agents.sac import td_sampling
from crl.buffer import Sampling
from crl.networks.actors import DeterministicActor, actor_inputs
from crl.networks.critics import TwinQ


@struct.dataclass
class TD3State:
    params: Params  # {"actor": ..., "critic": ...}; the critic's leaves are [2, ...]
    target_params: Params
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    step: jax.Array  # critic updates so far: the actor moves on every policy_delay-th


class TD3(Agent):
    # crl.plan: twin Q trained, twin Q for the actor's Q, twin target Q; the actor, the
    # target actor
    network_passes: ClassVar = {"critic": (2, 2, 2), "actor": (1, 0, 1)}

    @functools.cached_property
    def actor(self) -> DeterministicActor:
        sizes = self.sizes
        return DeterministicActor(self.mlp("actor", sizes.action_size),
                                  sizes.state_size, sizes.goal_size)

    @functools.cached_property
    def critic(self) -> TwinQ:
        return self.twin_critic()

    @property
    def sampling(self) -> Sampling:
        return td_sampling(self.config)

    @functools.cached_property
    def optimizers(self) -> dict[str, optax.GradientTransformation]:
        return self.adam("actor", "critic")

    def init(self, key: jax.Array) -> TD3State:
        actor_key, critic_key = jax.random.split(key)
        params = {"actor": self.actor.init(actor_key), "critic": self.critic.init(critic_key)}
        opt = self.optimizers
        return TD3State(params=params, target_params=params,
                        actor_opt=opt["actor"].init(params["actor"]),
                        critic_opt=opt["critic"].init(params["critic"]),
                        step=jnp.zeros((), jnp.int32))

    def act(self, params: Params, state: jax.Array, goal: jax.Array,
            key: jax.Array | None) -> jax.Array:
        action = self.actor.act(params["actor"], state, goal)
        if key is None:
            return action
        noise = self.config.exploration_noise * jax.random.normal(key, action.shape)
        return jnp.clip(action + noise, -1.0, 1.0)

    def q_value(self, params: Params, state: jax.Array, action: jax.Array,
                goal: jax.Array) -> jax.Array:
        return jnp.min(self.critic(params["critic"], state, action, goal), axis=0)

    def network_inputs(self, batch: dict[str, jax.Array]) -> dict:
        return {"actor": (self.actor.mlp, actor_inputs(batch["state"], batch["goal"])),
                "critic": (self.critic.mlp, self.critic.inputs(batch["state"], batch["action"],
                                                                batch["goal"]))}

    def update(self, state: TD3State, batch: dict[str, jax.Array],
               key: jax.Array) -> tuple[TD3State, Metrics]:
        cfg, opt, params, target = self.config, self.optimizers, state.params, state.target_params
        noise = jnp.clip(cfg.policy_noise * self.global_normal(key, self.sizes.action_size),
                         -cfg.noise_clip, cfg.noise_clip)
        next_action = jnp.clip(
            self.actor.act(target["actor"], batch["next_state"], batch["goal"]) + noise, -1, 1)
        next_q = jnp.min(self.critic(target["critic"], batch["next_state"], next_action,
                                     batch["goal"]), axis=0)
        y = jax.lax.stop_gradient(batch["reward"] + cfg.discount * next_q)

        def critic_objective(critic_params):
            q = self.critic(critic_params, batch["state"], batch["action"], batch["goal"])
            return masked_mean(jnp.sum((q - y) ** 2, axis=0), batch["same_trajectory"]), q

        (critic_loss, q), critic_grads = jax.value_and_grad(critic_objective, has_aux=True)(
            params["critic"])

        def actor_objective(actor_params):
            action = self.actor.act(actor_params, batch["state"], batch["goal"])
            q_1 = self.critic(params["critic"], batch["state"], action, batch["goal"])[0]
            return pmean(-jnp.mean(q_1))

        actor_loss, actor_grads = jax.value_and_grad(actor_objective)(params["actor"])
        critic_params, critic_opt = apply_gradients(opt["critic"], params["critic"],
                                                    critic_grads, state.critic_opt)
        # The actor and the targets move on every policy_delay-th critic update only.
        delayed = (state.step % cfg.policy_delay) == 0
        actor_params, actor_opt = where(delayed, apply_gradients(
            opt["actor"], params["actor"], actor_grads, state.actor_opt),
            (params["actor"], state.actor_opt))
        new_params = {"actor": actor_params, "critic": critic_params}
        health = self.block_health({"actor": actor_grads, "critic": critic_grads}, params,
                                   new_params)
        params = new_params
        state = TD3State(params=params,
                         target_params=where(delayed, polyak(target, params, cfg.tau), target),
                         actor_opt=actor_opt, critic_opt=critic_opt, step=state.step + 1)
        metrics = {"critic_loss": critic_loss, "actor_loss": actor_loss,
                   "q": masked_mean(q[0], batch["same_trajectory"]),
                   "reward": pmean(jnp.mean(batch["reward"])), **health}
        return state, metrics
