"""The tiny configuration that end-to-end tests share (compiled once per session through the
persistent compilation cache), and its command line."""

import dataclasses

import numpy as np

from crl.config import Config

TINY = Config(env="point_u_maze", depth=4, width=32, repr_dim=16, num_envs=8, batch_size=32,
              episode_length=25, unroll_length=10, min_replay_size=25, max_replay_size=200,
              num_sgd_batches_per_training_step=4, total_env_steps=8 * 25 + 2 * 3 * 80,
              num_epochs=2, num_eval_envs=8, seed=0)
# Epochs of TINY's length (3 training steps) for any number of epochs.
EPOCH_ENV_STEPS = 3 * 8 * 10


def with_epochs(config: Config, num_epochs: int) -> Config:
    """``config`` with ``num_epochs`` epochs of the same length (the same compiled functions)."""
    return dataclasses.replace(config, num_epochs=num_epochs, total_env_steps=(
        config.min_replay_size * config.num_envs + num_epochs * EPOCH_ENV_STEPS))


def metric_atol(name: str) -> float:
    """Absolute tolerance of a metric between two runs that round differently (vectorised,
    on more devices): float32 noise, except for the critic's accuracy, a count of argmaxes in
    which a near-tie among a tiny network's logits may break the other way: two rows of the
    smallest epoch compared (64 rows, in the four-device tests)."""
    return 2 / 64 + 1e-6 if name.endswith("categorical_accuracy") else 1e-6


def without_times(history: list[dict]) -> list[dict]:
    """Metrics without the wall-clock ones (``time/...``), which no two runs share."""
    return [{k: v for k, v in m.items() if not k.startswith("time/")} for m in history]


def quiet(_: str) -> None:
    """A ``log`` that prints nothing."""


def refusal_on_a_small_device(config: Config, fraction: float, monkeypatch, capsys) -> str:
    """``python -m crl.train`` of ``config`` on a simulated accelerator holding ``fraction`` of
    what crl.plan predicts it needs: the one line it exits with (code 2)."""
    import pytest

    from crl import plan
    from crl.train import main

    need = plan.make_plan(config, plan.DEVICES["h100"]).total
    monkeypatch.setattr("crl.train.device_memory", lambda device: fraction * need)
    with pytest.raises(SystemExit) as exit:
        main(cli_args(config))
    assert exit.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def cli_args(config: Config) -> list[str]:
    """The `python -m crl.train` options that give ``config`` (fields that differ from the
    defaults)."""
    args = []
    for field in dataclasses.fields(Config):
        value, default = getattr(config, field.name), field.default
        if value == default or value is None:
            continue
        flag = "--" + field.name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + field.name.replace("_", "-"))
        elif isinstance(value, tuple):
            args += [flag, *map(str, value)]
        else:
            args += [flag, str(value)]
    return args


# The baseline agents as the tests run them (crl is TINY itself): SAC and TD3 with HER cover
# both the commanded and the hindsight goals of their batches. TINY's repr_dim is crl's alone.
_NO_REPRESENTATION = {"repr_dim": Config.repr_dim}
BASELINES = {"sac_her": {"agent": "sac", "her": True, **_NO_REPRESENTATION},
             "td3_her": {"agent": "td3", "her": True, **_NO_REPRESENTATION},
             "gcbc": {"agent": "gcbc", **_NO_REPRESENTATION}}


def batches_for(trainer, num_batches: int, seed: int = 0) -> dict:
    """Global batches of the fields ``trainer``'s agent asks for, drawn from a fixed seed:
    states and goals over the point maze's extent, actions in [-1, 1], a tenth of the rewards
    1 and a tenth of the transitions at an episode's end."""
    rng = np.random.default_rng(seed)
    env, shape = trainer.goal_env, (num_batches, trainer.config.batch_size)
    values = {
        "state": rng.uniform(0, 12, (*shape, env.state_size)),
        "next_state": rng.uniform(0, 12, (*shape, env.state_size)),
        "goal": rng.uniform(0, 12, (*shape, env.goal_size)),
        "action": rng.uniform(-1, 1, (*shape, env.action_size)),
        "reward": rng.uniform(size=shape) < 0.1,
        "same_trajectory": rng.uniform(size=shape) > 0.1,
    }
    return {name: values[name].astype(bool if name == "same_trajectory" else np.float32)
            for name in trainer.sampling.fields}
