"""Evaluate a saved policy: ``python -m crl.evaluate runs/<name> [--env NAME] [--episodes N]``.

Prints the evaluation metrics (those of metrics.jsonl) of the deterministic policy of the
latest checkpoint, or of ``--epoch E``, on ``--episodes`` fresh episodes of the run's eval env
or of ``--env`` (e.g. an ``_eval`` variant with far goals). With the run's own env and number of
episodes it sees the very episodes the run's evaluation saw, so it prints the logged numbers.

``crl.load_run(path)`` gives notebooks and scripts the config, the agent and the parameters.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any, NamedTuple

import jax

from crl import runs
from crl.agents.base import Agent, Params
from crl.checkpoint import Checkpoints, Meta
from crl.config import Config, ConfigError, fail, validate
from crl.envs import UnknownEnvError, get_spec
from crl.train import Trainer, evaluation_key, timed_compile


class LoadedRun(NamedTuple):
    config: Config
    agent: Agent  # crl.agents: act(params, state, goal, key), q_value(...) where it has a critic
    params: Params  # crl: {"actor": ..., "critic": {"sa_encoder": ..., "goal_encoder": ...}}

    @property
    def networks(self) -> Any:
        """The contrastive agent's networks (``policy``, ``encode_state_action``,
        ``encode_goal``)."""
        return self.agent.networks


def open_run(path: Path, env: str | None = None, episodes: int | None = None,
             epoch: int | None = None, devices: list | None = None) -> tuple[Trainer, Any, Meta]:
    """The trainer of a saved run (evaluating on ``env`` with ``episodes`` envs if given) and
    the parameters of its checkpoint of ``epoch`` (default: the latest). Every argument is
    checked before anything is compiled: ConfigError or RunError name what is wrong."""
    path = Path(path).expanduser()
    config = runs.load_config(path)
    changes: dict[str, Any] = {}
    if env is not None:
        try:
            get_spec(env)
        except UnknownEnvError as error:
            raise ConfigError(f"--env: {error}") from None
        changes["eval_env"] = env
    if episodes is not None:
        if episodes <= 0:
            raise ConfigError(f"--episodes {episodes} must be a positive integer")
        changes["num_eval_envs"] = episodes
    config = validate(dataclasses.replace(config, **changes))
    trainer = Trainer(config, devices)  # refuses an env whose observations the policy can't read
    checkpoints = Checkpoints(path)
    params, meta = checkpoints.restore_params(trainer, epoch)
    checkpoints.close()
    return trainer, params, meta


def load_run(path: str | Path, epoch: int | None = None) -> LoadedRun:
    """Config, agent and parameters of a run's latest checkpoint (or of ``epoch``), on the
    default device. ``agent.act(params, state, goal, None)`` gives the deterministic action and,
    for agents with a critic, ``agent.q_value(params, state, action, goal)`` the Q-value. For
    the contrastive agent, ``networks.policy(params["actor"], state, goal)`` gives the actor's
    mean and log-std; ``networks.encode_state_action`` and ``encode_goal`` the critic's
    representations."""
    trainer, params, _ = open_run(Path(path), epoch=epoch, devices=jax.devices()[:1])
    return LoadedRun(trainer.config, trainer.agent, params)


def evaluate_policy(trainer: Trainer, params: Params, epoch: int) -> dict[str, float]:
    """The evaluation the run logs after ``epoch``, of ``params``."""
    args = (params, evaluation_key(trainer.config, epoch))
    metrics = timed_compile(trainer.evaluate, *args)[0](*args)
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory, e.g. runs/ant_maze_d4_s0_20250101-120000")
    parser.add_argument("--env", default=None,
                        help="environment to evaluate on (default: the run's eval env)")
    parser.add_argument("--episodes", type=int, default=None,
                        help="number of episodes (default: the run's num_eval_envs)")
    parser.add_argument("--epoch", type=int, default=None,
                        help="checkpoint to load (default: the latest)")


def open_run_or_fail(args: argparse.Namespace) -> tuple[Trainer, Any, Meta]:
    try:
        return open_run(args.run, args.env, args.episodes, args.epoch)
    except (ConfigError, runs.RunError) as error:
        fail(str(error))


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m crl.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    trainer, params, meta = open_run_or_fail(args)
    metrics = {"epoch": meta.epoch, **evaluate_policy(trainer, params, meta.epoch)}
    if args.json:
        print(json.dumps(metrics))
    else:
        config = trainer.config
        print(f"{args.run}: policy of epoch {meta.epoch} on {config.eval_env}, "
              f"{config.num_eval_envs} episodes")
        for name, value in metrics.items():
            print(f"  {name:<22} {value:.6g}")
    return metrics


if __name__ == "__main__":
    main()
