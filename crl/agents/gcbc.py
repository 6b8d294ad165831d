"""Goal-conditioned behaviour cloning on hindsight-relabelled goals: trained online on the
agent's own replay this is GCSL (Ghosh et al. 2021). The tanh-Gaussian actor maximises
log pi(a | s, g) of the action a the agent took in s, with g a later state of the same
trajectory (the same relabelling as CRL's, so that a comparison isolates the objective). No
critic, no reward; it acts with pi's samples and is evaluated with tanh(mean).
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
from crl.networks.actors import TanhGaussianActor, actor_inputs

# Actions in the replay are tanh of a sample and may round to +-1, whose pre-tanh is infinite.
_ACTION_LIMIT = 1 - 1e-6


@struct.dataclass
class GCBCState:
    params: Params  # {"actor": ...}
    actor_opt: optax.OptState


class GCBC(Agent):
    # crl.plan: the actor alone
    network_passes: ClassVar = {"actor": (1, 0, 0)}
    has_critic: ClassVar[bool] = False

    @functools.cached_property
    def actor(self) -> TanhGaussianActor:
        return self.tanh_gaussian_actor()

    @property
    def sampling(self) -> Sampling:
        return Sampling(("state", "action", "goal"), discount=self.config.discount)

    @functools.cached_property
    def optimizer(self) -> optax.GradientTransformation:
        return self.adam("actor")["actor"]

    def init(self, key: jax.Array) -> GCBCState:
        params = {"actor": self.actor.init(key)}
        return GCBCState(params=params, actor_opt=self.optimizer.init(params["actor"]))

    def act(self, params: Params, state: jax.Array, goal: jax.Array,
            key: jax.Array | None) -> jax.Array:
        return self.actor.act(params["actor"], state, goal, key)

    def network_inputs(self, batch: dict[str, jax.Array]) -> dict:
        return {"actor": (self.actor.mlp, actor_inputs(batch["state"], batch["goal"]))}

    def update(self, state: GCBCState, batch: dict[str, jax.Array],
               key: jax.Array) -> tuple[GCBCState, Metrics]:
        pre_tanh = jnp.arctanh(jnp.clip(batch["action"], -_ACTION_LIMIT, _ACTION_LIMIT))

        def objective(actor_params):
            mean, log_std = self.actor.policy(actor_params, batch["state"], batch["goal"])
            log_prob = losses.tanh_gaussian_log_prob(pre_tanh, mean, log_std)
            return pmean(-jnp.mean(log_prob)), (mean, log_std)

        (loss, (mean, log_std)), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params["actor"])
        actor_params, actor_opt = apply_gradients(self.optimizer, state.params["actor"], grads,
                                                  state.actor_opt)
        metrics = {"actor_loss": loss,
                   "action_error": pmean(jnp.mean(jnp.abs(jnp.tanh(mean) - batch["action"]))),
                   "log_std": pmean(jnp.mean(log_std)),
                   **self.block_health({"actor": grads}, state.params, {"actor": actor_params})}
        return state.replace(params={"actor": actor_params}, actor_opt=actor_opt), metrics
