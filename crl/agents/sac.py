"""Soft actor-critic (Haarnoja et al. 2018) on goal-conditioned observations, with an optional
hindsight experience replay (Andrychowicz et al. 2017).

The reward is crl's sparse success indicator, r = 1[|next_state[goal_indices] - g| < success
radius], computed from the replay (``crl.buffer``), never read from the env. Twin critics
Q_1, Q_2 of (s, a, g) regress onto r + discount * (min_i Q'_i(s', a') - alpha log pi(a'|s', g))
with a' ~ pi and Q' the Polyak-averaged target critics; the tanh-Gaussian actor maximises
min_i Q_i - alpha log pi, and alpha follows SAC's automatic entropy tuning. Transitions whose
next state belongs to another episode (the last step of one) are left out of the critic's loss.
With ``--her`` a fraction of the goals (``--her-fraction``) is a later state of the same
trajectory (HER's "future" strategy), the others the goal the env commanded.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
import optax
from flax import struct

from crl import losses
from crl.agents.base import (
    Agent,
    Metrics,
    Params,
    apply_gradients,
    masked_mean,
    pmean,
    polyak,
)
from crl.buffer import Sampling
from crl.networks.actors import TanhGaussianActor, actor_inputs
from crl.networks.critics import TwinQ

TD_FIELDS = ("state", "action", "goal", "next_state", "reward", "same_trajectory")


def td_sampling(config) -> Sampling:
    """The batches of the TD agents: commanded goals, or with --her a fraction of hindsight
    goals drawn uniformly from the later steps of the trajectory."""
    return Sampling(TD_FIELDS, hindsight_fraction=config.her_fraction if config.her else 0.0,
                    future="uniform", discount=config.discount)


@struct.dataclass
class SACState:
    params: Params  # {"actor": ..., "critic": ...}; the critic's leaves are [2, ...]
    target_critic: Params
    log_alpha: jax.Array
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    alpha_opt: optax.OptState


class SAC(Agent):
    # crl.plan: twin Q trained, twin Q for the actor's Q, twin target Q; the actor, and its
    # next actions
    network_passes: ClassVar = {"critic": (2, 2, 2), "actor": (1, 0, 1)}

    @functools.cached_property
    def actor(self) -> TanhGaussianActor:
        return self.tanh_gaussian_actor()

    @functools.cached_property
    def critic(self) -> TwinQ:
        return self.twin_critic()

    @property
    def sampling(self) -> Sampling:
        return td_sampling(self.config)

    @functools.cached_property
    def optimizers(self) -> dict[str, optax.GradientTransformation]:
        return self.adam("actor", "critic", "alpha")

    @property
    def target_entropy(self) -> float:
        target = self.config.target_entropy
        return target if target is not None else -float(self.sizes.action_size)

    def init(self, key: jax.Array) -> SACState:
        actor_key, critic_key = jax.random.split(key)
        params = {"actor": self.actor.init(actor_key), "critic": self.critic.init(critic_key)}
        log_alpha = jnp.zeros((), jnp.float32)
        opt = self.optimizers
        return SACState(params=params, target_critic=params["critic"], log_alpha=log_alpha,
                        actor_opt=opt["actor"].init(params["actor"]),
                        critic_opt=opt["critic"].init(params["critic"]),
                        alpha_opt=opt["alpha"].init(log_alpha))

    def act(self, params: Params, state: jax.Array, goal: jax.Array,
            key: jax.Array | None) -> jax.Array:
        return self.actor.act(params["actor"], state, goal, key)

    def q_value(self, params: Params, state: jax.Array, action: jax.Array,
                goal: jax.Array) -> jax.Array:
        return jnp.min(self.critic(params["critic"], state, action, goal), axis=0)

    def network_inputs(self, batch: dict[str, jax.Array]) -> dict:
        return {"actor": (self.actor.mlp, actor_inputs(batch["state"], batch["goal"])),
                "critic": (self.critic.mlp, self.critic.inputs(batch["state"], batch["action"],
                                                                batch["goal"]))}

    def _sample(self, actor_params: Params, state: jax.Array, goal: jax.Array,
                noise: jax.Array) -> tuple[jax.Array, jax.Array]:
        """A reparameterised action of pi(. | state, goal) and its log-probability."""
        mean, log_std = self.actor.policy(actor_params, state, goal)
        pre_tanh = mean + jnp.exp(log_std) * noise
        return jnp.tanh(pre_tanh), losses.tanh_gaussian_log_prob(pre_tanh, mean, log_std)

    def update(self, state: SACState, batch: dict[str, jax.Array],
               key: jax.Array) -> tuple[SACState, Metrics]:
        cfg, opt, params = self.config, self.optimizers, state.params
        next_key, actor_key = jax.random.split(key)
        size = self.sizes.action_size
        alpha = self.temperature(state.log_alpha)

        next_action, next_log_prob = self._sample(params["actor"], batch["next_state"],
                                                  batch["goal"], self.global_normal(next_key, size))
        next_q = jnp.min(self.critic(state.target_critic, batch["next_state"], next_action,
                                     batch["goal"]), axis=0)
        target = jax.lax.stop_gradient(
            batch["reward"] + cfg.discount * (next_q - alpha * next_log_prob))

        def critic_objective(critic_params):
            q = self.critic(critic_params, batch["state"], batch["action"], batch["goal"])
            loss = masked_mean(jnp.sum((q - target) ** 2, axis=0), batch["same_trajectory"])
            return loss, q

        (critic_loss, q), critic_grads = jax.value_and_grad(critic_objective, has_aux=True)(
            params["critic"])

        def actor_objective(actor_params):
            action, log_prob = self._sample(actor_params, batch["state"], batch["goal"],
                                            self.global_normal(actor_key, size))
            q_new = jnp.min(self.critic(params["critic"], batch["state"], action,
                                        batch["goal"]), axis=0)
            return pmean(losses.actor_loss(alpha, log_prob, q_new)), log_prob

        (actor_loss, log_prob), actor_grads = jax.value_and_grad(
            actor_objective, has_aux=True)(params["actor"])
        alpha_loss, alpha_grad = jax.value_and_grad(
            lambda log_alpha: pmean(losses.temperature_loss(log_alpha, log_prob,
                                                            self.target_entropy)))(state.log_alpha)

        actor_params, actor_opt = apply_gradients(opt["actor"], params["actor"], actor_grads,
                                                  state.actor_opt)
        critic_params, critic_opt = apply_gradients(opt["critic"], params["critic"],
                                                    critic_grads, state.critic_opt)
        log_alpha, alpha_opt = self.step_temperature(opt["alpha"], state.log_alpha, alpha_grad,
                                                     state.alpha_opt)
        new_params = {"actor": actor_params, "critic": critic_params}
        health = self.block_health({"actor": actor_grads, "critic": critic_grads}, params,
                                   new_params)
        state = SACState(params=new_params,
                         target_critic=polyak(state.target_critic, critic_params, cfg.tau),
                         log_alpha=log_alpha, actor_opt=actor_opt, critic_opt=critic_opt,
                         alpha_opt=alpha_opt)
        valid = batch["same_trajectory"]
        metrics = {"critic_loss": critic_loss, "actor_loss": actor_loss,
                   "alpha_loss": alpha_loss, "alpha": alpha, "entropy": pmean(-jnp.mean(log_prob)),
                   "q": masked_mean(q[0], valid), "reward": pmean(jnp.mean(batch["reward"])),
                   **health}
        return state, metrics
