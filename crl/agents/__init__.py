"""Registry of agents by name: ``--agent NAME``.

Looking a name up imports nothing heavy, so a bad name or an option of another agent is refused
before JAX starts. An entry names the agent's class by module path and the options of
``crl.config.Config`` that only some agents use (``AGENT_OPTIONS``) which this one reads; any of
those given a non-default value for an agent that does not read it is refused. Adding an agent
is one file in this package and one line here (docs/agents.md).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib

# Options of Config that only some agents read.
AGENT_OPTIONS = ("energy", "contrastive_loss", "logsumexp_penalty", "repr_dim", "critic_depth",
                 "critic_width", "critic_residual", "critic_layer_norm", "critic_activation",
                 "critic_lr", "alpha_lr", "entropy", "target_entropy", "explore_actions",
                 "eval_actions", "tau", "her", "her_fraction", "policy_noise", "noise_clip",
                 "policy_delay", "exploration_noise")
# What every agent with a critic reads: its shape, and best-of-K acting under it.
_CRITIC = ("critic_depth", "critic_width", "critic_residual", "critic_layer_norm",
           "critic_activation", "critic_lr", "explore_actions", "eval_actions")
_TD = (*_CRITIC, "tau", "her", "her_fraction")
_ENTROPY = ("alpha_lr", "entropy", "target_entropy")


@dataclasses.dataclass(frozen=True)
class AgentSpec:
    cls: str  # "module:Class", a subclass of crl.agents.base.Agent
    options: tuple[str, ...]  # the AGENT_OPTIONS it reads
    summary: str

    def load(self) -> type:
        module, name = self.cls.split(":")
        return getattr(importlib.import_module(module), name)


REGISTRY: dict[str, AgentSpec] = {
    "crl": AgentSpec("crl.agents.contrastive:ContrastiveRL",
                     ("energy", "contrastive_loss", "logsumexp_penalty", "repr_dim", *_CRITIC,
                      *_ENTROPY),
                     "contrastive RL: InfoNCE critic, SAC-style actor; no reward"),
    "sac": AgentSpec("crl.agents.sac:SAC", (*_TD, *_ENTROPY),
                     "soft actor-critic on crl's sparse reward (--her: with hindsight goals)"),
    "td3": AgentSpec("crl.agents.td3:TD3",
                     (*_TD, "policy_noise", "noise_clip", "policy_delay", "exploration_noise"),
                     "TD3 on crl's sparse reward (--her: with hindsight goals)"),
    "gcbc": AgentSpec("crl.agents.gcbc:GCBC", (),
                      "goal-conditioned behaviour cloning on hindsight goals (online: GCSL)"),
}
AGENT_NAMES = tuple(REGISTRY)


class UnknownAgentError(ValueError):
    pass


def get_agent_spec(name: str) -> AgentSpec:
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, AGENT_NAMES, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UnknownAgentError(f"unknown agent {name!r}; {hint}valid: {', '.join(AGENT_NAMES)}")
    return REGISTRY[name]


def make_agent(config, sizes, num_devices: int = 1):
    """The agent of a resolved ``config`` for an env of ``sizes`` (``base.EnvSizes``)."""
    return get_agent_spec(config.agent).load()(config, sizes, num_devices)
