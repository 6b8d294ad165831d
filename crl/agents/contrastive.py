"""Contrastive RL (Eysenbach et al. 2022), as scaled by Wang et al. 2025.

The critic is an energy between a state-action representation phi(s, a) and a goal
representation psi(g), trained with a contrastive loss over the global batch: each
state-action must pick out its own hindsight goal among the other rows' goals. The actor is a
tanh-Gaussian that maximises the energy with SAC-style automatic entropy. No reward is used.
Batches: state, action and a future state of the same trajectory as goal, P(j) ~ discount^(j-t).
"""

from __future__ import annotations

import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
import optax
from flax import struct

from crl import losses
from crl.agents.base import Agent, Metrics, Params, apply_gradients, pmean
from crl.buffer import Sampling
from crl.distributed import AXIS
from crl.networks.actors import actor_inputs
from crl.networks.agent import Networks, make_networks


@struct.dataclass
class ContrastiveState:
    params: Params  # {"actor": ..., "critic": {"sa_encoder": ..., "goal_encoder": ...}}
    log_alpha: jax.Array
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    alpha_opt: optax.OptState


class ContrastiveRL(Agent):
    # crl.plan: phi and psi trained, phi again for the actor's Q; the actor
    network_passes: ClassVar = {"critic": (2, 1, 0), "actor": (1, 0, 0)}

    @functools.cached_property
    def networks(self) -> Networks:
        sizes = self.sizes
        return make_networks(state_size=sizes.state_size, goal_size=sizes.goal_size,
                             action_size=sizes.action_size, repr_dim=self.config.repr_dim,
                             mlp=self.mlp)

    @property
    def sampling(self) -> Sampling:
        return Sampling(("state", "action", "goal"), discount=self.config.discount)

    @functools.cached_property
    def optimizers(self) -> dict[str, optax.GradientTransformation]:
        return self.adam("actor", "critic", "alpha")

    @property
    def target_entropy(self) -> float:
        target = self.config.target_entropy
        return target if target is not None else -0.5 * self.sizes.action_size

    def init(self, key: jax.Array) -> ContrastiveState:
        params = self.networks.init(key)
        log_alpha = jnp.zeros((), jnp.float32)
        opt = self.optimizers
        return ContrastiveState(
            params=params, log_alpha=log_alpha,
            actor_opt=opt["actor"].init(params["actor"]),
            critic_opt=opt["critic"].init(params["critic"]),
            alpha_opt=opt["alpha"].init(log_alpha))

    def act(self, params: Params, state: jax.Array, goal: jax.Array,
            key: jax.Array | None) -> jax.Array:
        return self.networks.actor.act(params["actor"], state, goal, key)

    def q_value(self, params: Params, state: jax.Array, action: jax.Array,
                goal: jax.Array) -> jax.Array:
        nets = self.networks
        phi = nets.encode_state_action(params["critic"], state, action)
        psi = nets.encode_goal(params["critic"], goal)
        return losses.energy_pairs(self.config.energy, phi, psi)

    def representation_distance(self, params: Params, state: jax.Array, action: jax.Array,
                                goal: jax.Array) -> jax.Array:
        """||phi(s, a) - psi(g)||, row by row: what the L2 energy turns into Q."""
        nets = self.networks
        phi = nets.encode_state_action(params["critic"], state, action)
        return jnp.linalg.norm(phi - nets.encode_goal(params["critic"], goal), axis=-1)

    def network_inputs(self, batch: dict[str, jax.Array]) -> dict:
        nets = self.networks
        return {"actor": (nets.actor.mlp, actor_inputs(batch["state"], batch["goal"])),
                "critic/sa_encoder": (nets.sa_encoder,
                                      nets.sa_inputs(batch["state"], batch["action"])),
                "critic/goal_encoder": (nets.goal_encoder, batch["goal"])}

    def representations(self, params: Params, batch: dict[str, jax.Array]) -> dict:
        nets = self.networks
        return {"phi": nets.encode_state_action(params["critic"], batch["state"],
                                                batch["action"]),
                "psi": nets.encode_goal(params["critic"], batch["goal"])}

    def update(self, state: ContrastiveState, batch: dict[str, jax.Array],
               key: jax.Array) -> tuple[ContrastiveState, Metrics]:
        """Actor and temperature update, and critic update.

        All three losses are taken at the parameters before the step, so the order of the
        updates does not matter. The critic's goal representations psi(g) serve the actor's
        Q-values too: the goal encoder runs once per step, not twice.
        """
        cfg, nets, opt = self.config, self.networks, self.optimizers
        params = state.params
        noise = self.global_normal(key, nets.action_size)
        alpha = self.temperature(state.log_alpha)

        def critic_objective(critic_params):
            phi = nets.encode_state_action(critic_params, batch["state"], batch["action"])
            psi = nets.encode_goal(critic_params, batch["goal"])
            # Contrast against the global batch: every device sees all representations.
            loss, metrics = losses.critic_loss(
                cfg.energy, cfg.contrastive_loss, cfg.logsumexp_penalty,
                jax.lax.all_gather(phi, AXIS, tiled=True),
                jax.lax.all_gather(psi, AXIS, tiled=True))
            return pmean(loss), (metrics, psi)

        (_, (critic_metrics, psi)), critic_grads = jax.value_and_grad(
            critic_objective, has_aux=True)(params["critic"])

        def actor_objective(actor_params):
            mean, log_std = nets.policy(actor_params, batch["state"], batch["goal"])
            pre_tanh = mean + jnp.exp(log_std) * noise
            log_prob = losses.tanh_gaussian_log_prob(pre_tanh, mean, log_std)
            phi = nets.encode_state_action(params["critic"], batch["state"], jnp.tanh(pre_tanh))
            q = losses.energy_pairs(cfg.energy, phi, psi)
            return pmean(losses.actor_loss(alpha, log_prob, q)), log_prob

        def temperature_objective(log_alpha, log_prob):
            return pmean(losses.temperature_loss(log_alpha, log_prob, self.target_entropy))

        (actor_loss, log_prob), actor_grads = jax.value_and_grad(
            actor_objective, has_aux=True)(params["actor"])
        alpha_loss, alpha_grad = jax.value_and_grad(temperature_objective)(state.log_alpha,
                                                                           log_prob)
        actor_params, actor_opt = apply_gradients(opt["actor"], params["actor"], actor_grads,
                                                  state.actor_opt)
        critic_params, critic_opt = apply_gradients(opt["critic"], params["critic"],
                                                    critic_grads, state.critic_opt)
        log_alpha, alpha_opt = self.step_temperature(opt["alpha"], state.log_alpha, alpha_grad,
                                                     state.alpha_opt)
        new_params = {"actor": actor_params, "critic": critic_params}
        health = self.block_health({"actor": actor_grads, "critic": critic_grads}, params,
                                   new_params)
        state = state.replace(params=new_params,
                              log_alpha=log_alpha, actor_opt=actor_opt, critic_opt=critic_opt,
                              alpha_opt=alpha_opt)
        metrics = {
            "actor_loss": actor_loss, "alpha_loss": alpha_loss, "alpha": alpha,
            "entropy": -jnp.mean(log_prob), **critic_metrics,
        }
        return state, {**pmean(metrics), **health}
