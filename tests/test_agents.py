"""Agents on one runner: the contrastive agent's numbers from before the split, and for every
baseline agent one epoch on 1 and on 2 devices, bit-exact resume, crl's own sparse reward and
hindsight goals, and options of other agents refused."""

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax.envs.base import State
from tiny import BASELINES, TINY, batches_for, metric_atol, with_epochs, without_times

import crl
from crl import buffer as replay
from crl import envs, runs
from crl.agents.sac import TD_FIELDS
from crl.config import validate
from crl.envs.point_maze import PointMaze
from crl.train import Trainer, main, train

TESTS = Path(__file__).resolve().parent
GOLDEN = json.loads((TESTS / "golden" / "crl_before_split.json").read_text())


def baseline_config(tmp_path, name: str, **changes):
    return validate(dataclasses.replace(
        TINY, **{**BASELINES[name], **changes}, run_dir=str(tmp_path), run_name=name,
        compile_cache=os.environ["CRL_TEST_COMPILE_CACHE"], render=False))


# ------------------------------------------------------------ the contrastive agent, unchanged
def test_crl_sgd_steps_equal_the_values_recorded_before_the_split(optimised_compile):
    """Five SGD steps on a fixed batch from a fixed seed, against the numbers the trainer gave
    before algorithms moved into crl/agents/ (tests/golden/crl_before_split.json, at 792e68c)."""
    config = validate(dataclasses.replace(TINY, depth=8, compile_cache=""))
    trainer = Trainer(config)
    rng = np.random.default_rng(0)
    shape = (5, config.batch_size)
    batches = {"state": rng.uniform(0, 12, (*shape, 2)).astype(np.float32),
               "action": rng.uniform(-1, 1, (*shape, 2)).astype(np.float32),
               "goal": rng.uniform(0, 12, (*shape, 2)).astype(np.float32)}
    state, metrics = trainer.sgd_steps(trainer.init(jax.random.PRNGKey(0)), batches,
                                       jax.random.PRNGKey(1))
    for name, recorded in GOLDEN["sgd_metrics"].items():
        np.testing.assert_allclose(metrics[name], recorded, rtol=1e-5, atol=1e-6, err_msg=name)
    params = jax.device_get(state.agent.params)
    leaves = {jax.tree_util.keystr(path, simple=True, separator="/"): leaf
              for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    assert leaves.keys() == GOLDEN["param_abs_sums"].keys()
    for name, recorded in GOLDEN["param_abs_sums"].items():
        # Besides rtol, 1e-6 per element: float32 sums in another order (another CPU, another
        # XLA) move a near-zero LayerNorm bias by ~1e-8 per element; a changed formula moves
        # the parameters by Adam's steps, 3e-4 per step.
        leaf = leaves[name]
        np.testing.assert_allclose(float(np.sum(np.abs(leaf), dtype=np.float64)), recorded,
                                   rtol=1e-5, atol=1e-6 * leaf.size, err_msg=name)
    np.testing.assert_allclose(float(state.agent.log_alpha), GOLDEN["log_alpha"], rtol=1e-5)


def test_crl_trains_the_numbers_it_trained_before_the_split(tiny_run):
    """TINY's whole run (collection, replay, relabelling, SGD, evaluation) logs what it logged
    before the split."""
    _, _, history, _ = tiny_run
    recorded = GOLDEN["tiny_epochs"]
    assert [m["epoch"] for m in history] == [m["epoch"] for m in recorded]
    for ours, before in zip(without_times(history), recorded, strict=True):
        # The diagnostics came later (tests/test_diagnostics.py).
        assert {k for k in ours if not k.startswith("diag/")} == before.keys()
        for name, value in before.items():
            # Since the positive pairs' distances come from their differences (exact under
            # TF32), 2 of the accuracy's 384 argmaxes an epoch broke a near-tie the other way.
            assert math.isclose(ours[name], value, rel_tol=1e-5, abs_tol=metric_atol(name)), (
                name, ours, before)


# ------------------------------------------------------------ every baseline end to end
@pytest.fixture(scope="session", params=list(BASELINES))
def baseline_run(request, tmp_path_factory, baseline_runs):
    """A baseline on TINY: 2 epochs in one go, and 1 epoch then --resume --num-epochs 2."""
    name = request.param
    config, state, history, _ = baseline_runs(name)
    first = with_epochs(baseline_config(tmp_path_factory.mktemp(name) / "resumed", name), 1)
    train(first, log=lambda _: None)
    resumed = runs.resume_config(runs.run_path(first), ["--num-epochs", "2"])
    resumed_state, resumed_history = train(resumed, log=lambda _: None, resume=True)
    return name, config, state, history, resumed_state, resumed_history


def test_a_baseline_trains_moves_its_parameters_and_logs_finite_losses(baseline_run):
    name, config, state, history, _, _ = baseline_run
    assert [m["epoch"] for m in history] == [0, 1, 2]
    assert runs.run_label(config).startswith(f"point_u_maze_{name}_d4_s0")
    for metrics in history[1:]:
        assert math.isfinite(metrics["train/actor_loss"])
        assert 0 <= metrics["eval/success_any"] <= 1
        if config.agent != "gcbc":
            assert math.isfinite(metrics["train/critic_loss"])
            # The sparse reward of hindsight goals: some transitions reach their goal.
            assert 0 < metrics["train/reward"] < 1
        networks = ("actor",) if config.agent == "gcbc" else ("actor", "critic")
        for network in networks:
            for quantity in ("activation_rms", "dormant_fraction", "grad_norm", "update_ratio"):
                assert len(metrics[f"diag/{network}/{quantity}"]) == config.depth // 4
        assert not any(name.startswith("diag/critic/") for name in metrics
                       if config.agent == "gcbc")
    initial = Trainer(config).init(jax.random.PRNGKey(config.seed))
    moved = jax.tree.map(lambda a, b: not np.allclose(a, b), state.agent.params,
                         initial.agent.params)
    assert all(jax.tree.leaves(moved)), moved


def test_a_resumed_baseline_equals_the_uninterrupted_run_bit_for_bit(baseline_run):
    _, _, state, history, resumed_state, resumed_history = baseline_run
    assert without_times(resumed_history) == without_times(history)
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    for (path, a), b in zip(leaves, jax.tree.leaves(resumed_state), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b)), jax.tree_util.keystr(path)


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory, compile_cache) -> dict:
    from test_distributed import WORKERS, forced_devices_env

    result = subprocess.run([sys.executable, str(WORKERS / "agents.py"),
                             str(tmp_path_factory.mktemp("agents_2dev")), compile_cache,
                             str(TESTS)], capture_output=True, text=True, timeout=900,
                            env=forced_devices_env(2))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("name", list(BASELINES))
def test_a_baseline_takes_the_same_sgd_steps_on_one_and_two_devices(two_devices, name):
    one, two = two_devices[name]["1"], two_devices[name]["2"]
    # Means of O(1) terms summed in another order: an absolute tolerance for those near 0
    # (SAC's entropy, say) after the parameters have drifted by float32 rounding.
    for metric, values in one["metrics"].items():
        np.testing.assert_allclose(two["metrics"][metric], values, rtol=2e-5, atol=1e-5,
                                   err_msg=f"{name}: {metric}")
    np.testing.assert_allclose(two["params"], one["params"], rtol=1e-4, atol=1e-5)
    assert one["metrics"]["actor_loss"][0] != one["metrics"]["actor_loss"][-1]
    epoch = two_devices[name]["epoch"]
    assert epoch["epoch"] == 1 and math.isfinite(epoch["train/actor_loss"])


def test_evaluate_render_load_run_and_q_maps_work_on_a_baseline_run(baseline_run, tmp_path,
                                                                    capsys):
    from crl import evaluate, render, viz

    _, config, _, history, _, _ = baseline_run
    path = runs.run_path(config)
    metrics = evaluate.main([str(path), "--json"])
    assert metrics == {k: v for k, v in history[-1].items() if k.startswith("eval/")} | {
        "epoch": 2}
    render.main([str(path), "--episodes", "2", "--out", str(tmp_path)])
    assert (tmp_path / "epoch_2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = crl.load_run(path)
    assert loaded.config == config and loaded.agent.config == config
    env, run = viz.load_maze_run(path)
    if not run.agent.has_critic:
        with pytest.raises(ValueError, match="agent 'gcbc' has no critic"):
            viz.q_value_map(env, run)
        return
    q_map = viz.q_value_map(env, run, points_per_cell=2)
    assert q_map.label == f"{runs.agent_label(config)}, depth 4"
    point = np.argwhere(np.isfinite(q_map.q))[0]
    state = jnp.asarray([[q_map.x[point[0]], q_map.y[point[1]]]])
    goal = jnp.asarray([q_map.goal])
    action = run.agent.act(run.params, state, goal, None)
    twin = run.agent.critic(run.params["critic"], state, action, goal)  # [2, 1]
    np.testing.assert_allclose(q_map.q[tuple(point)], np.min(np.asarray(twin)), rtol=1e-5)
    assert np.isnan(q_map.distance).all()  # no representations to measure
    viz.save_figure(viz.plot_q_values(q_map), tmp_path / "q.png")
    assert (tmp_path / "q.png").stat().st_size > 0


# ------------------------------------------------------------ the update rules
@pytest.fixture(scope="module")
def td_trainers(tmp_path_factory):
    directory = tmp_path_factory.mktemp("td")
    return {name: Trainer(baseline_config(directory, name)) for name in ("sac_her", "td3_her")}


def test_sac_targets_follow_the_critic_by_polyak_averaging(td_trainers):
    trainer = td_trainers["sac_her"]
    state = trainer.init(jax.random.PRNGKey(0))
    before = jax.device_get(state)  # sgd_steps donates its state
    after, _ = trainer.sgd_steps(state, batches_for(trainer, 1), jax.random.PRNGKey(1))
    state = before
    tau = trainer.config.tau
    for old_target, new_critic, new_target in zip(
            jax.tree.leaves(state.agent.target_critic), jax.tree.leaves(after.agent.params[
                "critic"]), jax.tree.leaves(after.agent.target_critic), strict=True):
        expected = (1 - tau) * np.asarray(old_target) + tau * np.asarray(new_critic)
        np.testing.assert_allclose(new_target, expected, rtol=1e-6, atol=1e-7)
    # Two critics with their own initialisation.
    kernel = np.asarray(state.agent.params["critic"]["params"]["output"]["kernel"])
    assert kernel.shape[0] == 2 and not np.allclose(kernel[0], kernel[1])


def test_td3_moves_its_actor_and_targets_every_second_critic_update(td_trainers):
    trainer = td_trainers["td3_her"]
    assert trainer.config.policy_delay == 2
    state = trainer.init(jax.random.PRNGKey(0))
    batches = batches_for(trainer, 1)
    states = [jax.device_get(state)]  # host copies: sgd_steps donates its state
    for step in range(3):
        state = trainer.sgd_steps(state, batches, jax.random.PRNGKey(step))[0]
        states.append(jax.device_get(state))

    def moved(a, b):
        return not all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))

    actor = [s.agent.params["actor"] for s in states]
    targets = [s.agent.target_params for s in states]
    critics = [s.agent.params["critic"] for s in states]
    assert [moved(actor[i], actor[i + 1]) for i in range(3)] == [True, False, True]
    assert [moved(targets[i], targets[i + 1]) for i in range(3)] == [True, False, True]
    assert all(moved(critics[i], critics[i + 1]) for i in range(3))


def test_td3_explores_around_its_deterministic_action(td_trainers):
    trainer = td_trainers["td3_her"]
    params = trainer.init(jax.random.PRNGKey(0)).agent.params
    obs = jnp.zeros((4096, 4))
    greedy = trainer.act(params, obs, None)
    explored = trainer.act(params, obs, jax.random.PRNGKey(3))
    noise = np.asarray(explored - greedy)
    inside = np.abs(np.asarray(explored)) < 1  # clipping aside
    assert abs(noise[inside].std() - trainer.config.exploration_noise) < 0.01
    assert np.all(np.abs(explored) <= 1)


# ------------------------------------------------------------ crl's reward and HER
def test_her_batches_hold_the_success_reward_of_their_goal_checked_with_numpy():
    """Hand-made replay: every state carries its (time, env) in a third coordinate. For every
    transition of the sampled batches, NumPy recomputes from the buffer what it must be: the
    next state of the same env, whether it is of the same trajectory, a goal that is either the
    commanded one or a later state of the same trajectory, and r = 1[|next - goal| < radius]."""
    capacity, num_envs, length, radius = 12, 3, 6, 1.0
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 3, (capacity, num_envs, 2))
    code = np.arange(capacity)[:, None] * num_envs + np.arange(num_envs)[None, :]
    states = np.concatenate([xy, code[..., None]], -1).astype(np.float32)
    # Episodes of 2 to 5 steps, each with its own commanded goal.
    traj = np.stack([np.repeat(np.arange(capacity), rng.integers(2, 6, capacity))[:capacity]
                     for _ in range(num_envs)], 1).astype(np.int32)
    episode_goals = rng.uniform(0, 3, (capacity, num_envs, 2)).astype(np.float32)
    commanded = np.take_along_axis(episode_goals, traj[..., None], 0)
    steps = {"state": states, "action": rng.uniform(-1, 1, (capacity, num_envs, 2)),
             "traj_id": traj, "goal": commanded}
    empty = replay.init_buffer({k: jnp.asarray(v[0]) for k, v in steps.items()}, capacity)
    buffer = replay.insert(empty, {k: jnp.asarray(v) for k, v in steps.items()})
    sampling = replay.Sampling(TD_FIELDS, hindsight_fraction=0.5, future="uniform")

    hindsight, checked = 0, 0
    for seed in range(40):
        keys = tuple(jax.random.split(jax.random.PRNGKey(seed), 3))
        batch = jax.device_get(replay.sample(
            keys, buffer, sampling, window_length=length, goal_indices=(0, 1),
            success_radius=radius, batch_size=5, max_batches=3))
        for i in range(batch["state"].size // 3):
            row = {k: np.asarray(v).reshape(-1, *np.shape(v)[2:])[i] for k, v in batch.items()}
            t, env = divmod(int(row["state"][2]), num_envs)
            following = (t + 1) % capacity
            assert row["next_state"][2] == following * num_envs + env
            same = traj[following, env] == traj[t, env]
            assert row["same_trajectory"] == same
            goal = row["goal"]
            if np.array_equal(goal, commanded[t, env]):
                is_hindsight = False
            else:
                later = [j for j in range(t, t + length)
                         if traj[j % capacity, env] == traj[t, env]
                         and np.array_equal(goal, states[j % capacity, env, :2])]
                assert later, f"goal {goal} of step {t}, env {env} is neither"
                assert later[0] > t or not same  # itself only when no later step is there
                is_hindsight = True
            hindsight += is_hindsight
            distance = np.linalg.norm(row["next_state"][:2].astype(np.float64) - goal)
            assert row["reward"] == float(distance < radius)
            checked += 1
    assert checked == 40 * 15
    assert abs(hindsight / checked - 0.5) < 0.08  # binomial sd 0.02


def test_hers_future_goals_are_uniform_over_the_later_steps():
    traj_id = jnp.zeros(10, jnp.int32)  # one trajectory: step 0 has 9 later steps
    keys = jax.random.split(jax.random.PRNGKey(0), 20_000)
    goals = jax.vmap(lambda k: replay.sample_future_steps(k, traj_id, 0.99, "uniform"))(keys)
    counts = np.bincount(np.asarray(goals[:, 0]), minlength=10)
    assert counts[0] == 0
    expected = len(keys) / 9
    chi2 = np.sum((counts[1:] - expected) ** 2 / expected)
    assert chi2 < 26.1  # the 0.999 quantile of chi-squared with 8 degrees of freedom
    assert np.all(goals[:, -1] == 9)  # the last step has no later one: itself


class GarbageRewardPointMaze(PointMaze):
    """point_u_maze whose env reward is NaN: an agent that read it would learn NaNs."""

    def step(self, state: State, action: jax.Array) -> State:
        stepped = super().step(state, action)
        return stepped.replace(reward=jnp.full_like(stepped.reward, jnp.nan))


def test_a_baseline_never_reads_the_envs_reward(tmp_path, monkeypatch):
    spec = envs.REGISTRY["point_u_maze"]
    monkeypatch.setitem(envs.REGISTRY, "point_garbage_reward", dataclasses.replace(
        spec, cls="test_agents:GarbageRewardPointMaze"))
    honest = baseline_config(tmp_path / "honest", "sac_her", num_epochs=1,
                             total_env_steps=TINY.min_replay_size * TINY.num_envs + 240)
    garbage = dataclasses.replace(honest, env="point_garbage_reward", eval_env=None,
                                  run_dir=str(tmp_path / "garbage"))
    honest_state, honest_history = train(honest, log=lambda _: None)
    garbage_state, garbage_history = train(validate(garbage), log=lambda _: None)
    assert without_times(garbage_history) == without_times(honest_history)
    for a, b in zip(jax.tree.leaves(honest_state.agent), jax.tree.leaves(garbage_state.agent),
                    strict=True):
        assert np.array_equal(a, b)


# ------------------------------------------------------------ options of other agents
@pytest.mark.parametrize(("args", "message"), [
    (["--agent", "gcbc", "--energy", "dot"], "--energy does not apply to agent 'gcbc'"),
    (["--agent", "crl", "--her"], "--her does not apply to agent 'crl'"),
    (["--agent", "sac", "--policy-noise", "0.3"], "--policy-noise does not apply to agent 'sac'"),
    (["--agent", "td3", "--alpha-lr", "1e-3"], "--alpha-lr does not apply to agent 'td3'"),
    (["--agent", "gcbc", "--critic-depth", "8"], "--critic-depth does not apply to agent"),
    (["--agent", "sac", "--her-fraction", "0.3"], "her_fraction=0.3 needs --her"),
    (["--agent", "sac", "--her", "--her-fraction", "0"], "her_fraction=0.0 must be in (0, 1]"),
    (["--agent", "td3", "--policy-delay", "0"], "policy_delay=0 must be a positive integer"),
    (["--agent", "ppo"], "unknown agent 'ppo'"),
])
def test_options_of_another_agent_are_refused_in_one_line(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--env", "point_u_maze", "--run-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------ learning
@pytest.mark.slow
@pytest.mark.parametrize(("preset", "epochs"), [("point_quick_sac_her", 2),
                                               ("point_quick_td3_her", 2),
                                               ("point_quick_gcbc", 3)])
def test_a_baseline_learns_point_u_maze(tmp_path, compile_cache, optimised_compile, preset,
                                        epochs):
    """The first epochs of the agent's preset (the README's quick run for crl): success rises
    from the initial policy's level to at least half of the episodes (GCBC, the slowest to
    learn here, in 3 epochs; SAC and TD3 with HER in 2)."""
    from crl.config import PRESETS

    base = PRESETS[preset]
    epoch_steps = base.resolved().training_steps_per_epoch * base.env_steps_per_training_step
    config = validate(dataclasses.replace(
        base, num_epochs=epochs, total_env_steps=base.min_replay_size * base.num_envs
        + epochs * epoch_steps, run_dir=str(tmp_path), compile_cache=compile_cache,
        render=False))
    assert config.training_steps_per_epoch == base.resolved().training_steps_per_epoch
    _, history = train(config, log=print)
    print("success_any by epoch:", [round(m["eval/success_any"], 3) for m in history])
    best = max(m["eval/success_any"] for m in history[1:])
    assert best >= 0.5 and best >= history[0]["eval/success_any"] + 0.2
