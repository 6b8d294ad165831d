"""The switches behind the paper's ablations and its action selection: per-family network
ingredients and widths, a fixed temperature of 0, best-of-K actions under the critic, and the
SGD schedule options of the paper's code."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import TINY, batches_for, cli_args

from crl import runs
from crl.agents import make_agent
from crl.agents.base import Agent, EnvSizes
from crl.config import Config, ConfigError, validate
from crl.train import Trainer, main

SIZES = EnvSizes(state_size=5, goal_size=2, action_size=3)


def _kernels(tree) -> dict[str, tuple[int, ...]]:
    return {jax.tree_util.keystr(path, simple=True, separator="/"): leaf.shape
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize("agent", ["crl", "sac", "td3", "gcbc"])
def test_each_family_gets_its_own_width_and_ingredients(agent):
    """The actor's options shape the actor alone and the critic's the critic alone: widths in
    the parameter shapes, LayerNorm by its parameters, the rest by the module's fields."""
    changes = dict(agent=agent, depth=8, actor_width=16, actor_layer_norm=False,
                   actor_activation="relu")
    if agent != "gcbc":
        changes |= dict(critic_width=24, critic_residual=False)
    config = validate(Config(env="point_u_maze", **changes))
    built = make_agent(config, SIZES)
    params = jax.eval_shape(built.init, jax.random.PRNGKey(0)).params
    actor = _kernels(params["actor"])
    assert actor["params/blocks/DenseNormSwish_0/Dense_0/kernel"] == (2, 16, 16)  # 2 blocks
    assert not any("LayerNorm" in name for name in actor)
    mlps = {name: mlp for name, (mlp, _) in built.network_inputs(
        batches_for_sizes(built)).items()}
    assert (mlps["actor"].activation, mlps["actor"].residual) == ("relu", True)
    if agent == "gcbc":
        return
    critic = _kernels(params["critic"])
    blocks = [shape for name, shape in critic.items() if "blocks/DenseNormSwish_0/Dense_0/kernel"
              in name]
    assert blocks and all(shape[-2:] == (24, 24) for shape in blocks), critic
    assert any("LayerNorm" in name for name in critic)
    for name, mlp in mlps.items():
        if name != "actor":
            assert (mlp.width, mlp.residual, mlp.activation) == (24, False, "swish"), name


def batches_for_sizes(agent: Agent) -> dict:
    one = jnp.zeros((2, 1))
    return {"state": one.repeat(SIZES.state_size, 1), "goal": one.repeat(SIZES.goal_size, 1),
            "action": one.repeat(SIZES.action_size, 1), "next_state":
            one.repeat(SIZES.state_size, 1)}


class HandBuiltCritic(Agent):
    """Actions uniform in [-1, 1] per key; Q is minus the distance of the action to a target
    that differs per row."""

    target = jnp.array([[0.3, -0.2, 0.9], [-0.7, 0.1, 0.0]])

    def act(self, params, state, goal, key):
        if key is None:
            return jnp.zeros((state.shape[0], SIZES.action_size))
        return jax.random.uniform(key, (state.shape[0], SIZES.action_size), minval=-1, maxval=1)

    def q_value(self, params, state, action, goal):
        return -jnp.linalg.norm(action - self.target, axis=-1)


def test_best_of_k_takes_the_sample_of_highest_q():
    agent = HandBuiltCritic(Config(), SIZES)
    state, goal = jnp.zeros((2, SIZES.state_size)), jnp.zeros((2, SIZES.goal_size))
    key, samples = jax.random.PRNGKey(4), 16
    chosen = np.asarray(agent.select_action({}, state, goal, key, samples))
    candidates = np.stack([np.asarray(agent.act({}, state, goal, k))
                           for k in jax.random.split(key, samples)])  # [K, rows, action]
    distances = np.linalg.norm(candidates - np.asarray(HandBuiltCritic.target), axis=-1)
    for row in range(2):
        np.testing.assert_array_equal(chosen[row], candidates[np.argmin(distances[:, row]), row])
    # The best of 16 beats a typical single sample; one sample is the policy's own action.
    assert np.all(np.min(distances, 0) < np.median(distances, 0))
    np.testing.assert_array_equal(agent.select_action({}, state, goal, key, 1),
                                  agent.act({}, state, goal, key))
    np.testing.assert_array_equal(agent.select_action({}, state, goal, None), 0.0)


def test_without_entropy_the_temperature_is_zero_and_stays_put():
    config = validate(dataclasses.replace(TINY, entropy=False, compile_cache=""))
    trainer = Trainer(config)
    state = trainer.init(jax.random.PRNGKey(0))
    before = jax.device_get(state.agent)  # sgd_steps donates the state
    after, metrics = trainer.sgd_steps(state, batches_for(trainer, 3), jax.random.PRNGKey(1))
    np.testing.assert_array_equal(metrics["alpha"], 0.0)
    assert float(after.agent.log_alpha) == float(before.log_alpha) == 0.0
    assert np.all(np.isfinite(metrics["entropy"]))  # still measured
    moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), jax.device_get(after.agent.params),
                         before.params)
    assert all(jax.tree.leaves(moved["actor"]["params"]["output"]))


def test_schedule_options_of_the_papers_code():
    """use_all_batches: every batch of the sampled windows, 8 x (25 - 1) // 32 = 6 per training
    step instead of TINY's 4; the multiplier: twice the training steps per epoch (3 -> 6)."""
    assert (TINY.resolved().sgd_batches_per_training_step,
            TINY.resolved().training_steps_per_epoch) == (4, 3)
    both = validate(dataclasses.replace(TINY, use_all_batches=True, training_steps_multiplier=2))
    assert (both.sgd_batches_per_training_step, both.training_steps_per_epoch) == (6, 6)


@pytest.mark.parametrize(("changes", "message"), [
    ({"actor_activation": "gelu"}, "actor_activation='gelu' is unknown; valid: swish, relu"),
    ({"critic_width": 0}, "critic_width=0 must be a positive integer"),
    ({"eval_actions": 0}, "eval_actions=0 must be a positive integer"),
    ({"agent": "gcbc", "eval_actions": 4}, "--eval-actions does not apply to agent 'gcbc'"),
    ({"agent": "gcbc", "critic_residual": False},
     "--critic-residual does not apply to agent 'gcbc'"),
    ({"agent": "td3", "entropy": False}, "--entropy does not apply to agent 'td3'"),
])
def test_bad_ablation_options_are_refused_in_one_line(changes, message):
    with pytest.raises(ConfigError, match=message):
        validate(Config(env="point_u_maze", **changes))


def test_a_run_with_every_switch_trains_records_them_and_evaluates(tmp_path, capsys,
                                                                   compile_cache):
    """Best-of-3 collection and evaluation, a stochastic evaluation, ablated networks of their
    own widths, no entropy: the run trains, evaluates and writes its choices to config.json;
    --save-buffer writes its replay as a dataset."""
    config = dataclasses.replace(
        TINY, explore_actions=3, eval_actions=3, eval_stochastic=True, actor_width=16,
        critic_residual=False, actor_layer_norm=False, critic_activation="relu", entropy=False,
        use_all_batches=True, save_buffer=True, run_dir=str(tmp_path), run_name="switches",
        render=False, compile_cache=compile_cache)
    main(cli_args(config))
    run = tmp_path / "switches"
    saved = json.loads((run / "config.json").read_text())
    for name in ("explore_actions", "eval_actions", "eval_stochastic", "actor_width",
                 "critic_residual", "actor_layer_norm", "critic_activation", "entropy",
                 "use_all_batches"):
        assert saved[name] == getattr(config, name), name
    metrics = runs.read_metrics(run)
    # Epoch 0 is the initial policy's evaluation.
    assert [m["epoch"] for m in metrics] == list(range(TINY.num_epochs + 1))
    assert all(np.isfinite(m["eval/dist"]) for m in metrics)
    assert all(m["train/alpha"] == 0.0 for m in metrics[1:])
    # The dataset: 30 prefill steps (25 rounded up to unrolls of 10) and 2 x 3 unrolls, per env,
    # oldest first; the point maze's episodes end only at their 25 steps.
    with np.load(run / "buffer.npz") as dataset:
        assert sorted(dataset.files) == ["action", "goal_indices", "state", "traj_id"]
        assert dataset["state"].shape == (90, 8, 2) and dataset["action"].shape == (90, 8, 2)
        np.testing.assert_array_equal(dataset["traj_id"], np.arange(90)[:, None] // 25
                                      + np.zeros((1, 8), int))
        np.testing.assert_array_equal(dataset["goal_indices"], [0, 1])
        assert np.all(np.abs(dataset["action"]) <= 1)
