"""Per-block diagnostics: each quantity against NumPy from its definition on hand-built networks
(a dead block, an unchanged block, a matrix of known rank), and in metrics.jsonl of a run."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import without_times

from crl import diagnostics, runs, viz
from crl.config import validate
from crl.networks.mlp import LAYERS_PER_BLOCK, ResidualMLP
from crl.tracking import wandb_values
from crl.train import train

WIDTH, DEPTH, BATCH = 8, 12, 64  # three blocks


@pytest.fixture(scope="module")
def network():
    mlp = ResidualMLP(depth=DEPTH, width=WIDTH, out_dim=3, remat="none")
    variables = mlp.init(jax.random.PRNGKey(0), jnp.zeros((1, 5)))
    inputs = jax.random.normal(jax.random.PRNGKey(1), (BATCH, 5))
    return mlp, variables, inputs


def numpy_block_outputs(variables, inputs):
    """The residual stream after each block and each block's four Swish outputs, computed
    with NumPy from the architecture's definition (Dense, LayerNorm with eps 1e-6, Swish)."""
    params = jax.tree.map(np.asarray, variables["params"])

    def layer(p, x):
        y = x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
        y = (y - y.mean(-1, keepdims=True)) / np.sqrt(y.var(-1, keepdims=True) + 1e-6)
        y = y * p["LayerNorm_0"]["scale"] + p["LayerNorm_0"]["bias"]
        return y / (1 + np.exp(-y))

    x = layer(params["input"], np.asarray(inputs, np.float64))
    streams, swish = [], []
    for block in range(DEPTH // LAYERS_PER_BLOCK):
        y, outputs = x, []
        for index in range(LAYERS_PER_BLOCK):
            p = jax.tree.map(lambda leaf, block=block: leaf[block],
                             params["blocks"][f"DenseNormSwish_{index}"])
            y = layer(p, y)
            outputs.append(y)
        x = x + y
        streams.append(x)
        swish.append(outputs)
    return streams, swish


def numpy_dormant(outputs):
    """Sokar et al.'s dormant units of each layer, threshold 0.025 of the layer's mean."""
    fractions = []
    for y in outputs:
        activity = np.abs(y).mean(0)
        fractions.append(np.mean(activity <= 0.025 * activity.mean()))
    return np.mean(fractions)


def test_forward_health_matches_numpy_from_the_definitions(network):
    mlp, variables, inputs = network
    health = diagnostics.forward_health(mlp, variables, inputs)
    streams, swish = numpy_block_outputs(variables, inputs)
    np.testing.assert_allclose(health["activation_rms"],
                               [np.sqrt(np.mean(x ** 2)) for x in streams], rtol=1e-4)
    np.testing.assert_allclose(health["dormant_fraction"], [numpy_dormant(o) for o in swish])
    np.testing.assert_allclose(health["feature_norm"],
                               np.linalg.norm(streams[-1], axis=-1).mean(), rtol=1e-4)


def test_a_block_with_zero_weights_is_wholly_dormant_and_leaves_the_stream_unchanged(network):
    mlp, variables, inputs = network
    dead = jax.tree_util.tree_map_with_path(
        lambda path, leaf: leaf.at[1].set(0.0)
        if "blocks" in str(path) and "Dense" in str(path) else leaf, variables)
    health = diagnostics.forward_health(mlp, dead, inputs)
    assert float(health["dormant_fraction"][1]) == 1.0
    assert float(health["dormant_fraction"][0]) < 0.5
    assert float(health["dormant_fraction"][2]) < 0.5
    # x + f(x) with f = 0: the RMS after block 1 is the RMS after block 0.
    assert float(health["activation_rms"][1]) == pytest.approx(
        float(health["activation_rms"][0]), rel=1e-6)


def test_the_diagnostics_sow_nothing_unless_asked(network):
    mlp, variables, inputs = network
    assert set(variables) == {"params"}
    assert isinstance(mlp.apply(variables, inputs), jax.Array)


# Parameters of one block of width 8: four Dense (8 x 8 + 8) and four LayerNorm (8 + 8).
BLOCK_PARAMETERS = LAYERS_PER_BLOCK * (WIDTH * WIDTH + WIDTH + 2 * WIDTH)


def test_gradient_norm_and_update_ratio_per_block_from_hand_built_trees(network):
    _, variables, _ = network
    tree = {"actor": variables}
    ones = jax.tree.map(jnp.ones_like, tree)
    # Only block 2 moves, by 0.5 in every parameter.
    after = jax.tree_util.tree_map_with_path(
        lambda path, leaf: leaf.at[2].add(0.5) if "blocks" in str(path) else leaf, tree)
    health = diagnostics.block_health(ones, tree, after)
    np.testing.assert_allclose(health["diag/actor/grad_norm"],
                               [math.sqrt(BLOCK_PARAMETERS)] * 3, rtol=1e-6)
    block_2 = np.concatenate([np.asarray(leaf[2]).ravel() for leaf in
                              jax.tree.leaves(variables["params"]["blocks"])])
    ratio = health["diag/actor/update_ratio"]
    assert float(ratio[0]) == 0.0 and float(ratio[1]) == 0.0
    assert float(ratio[2]) == pytest.approx(
        0.5 * math.sqrt(BLOCK_PARAMETERS) / np.linalg.norm(block_2), rel=1e-5)


def test_stacked_twin_networks_are_measured_together_per_block(network):
    mlp, variables, inputs = network
    twins = jax.tree.map(lambda leaf: jnp.stack([leaf, leaf]), variables)
    tree = {"critic": twins}
    health = diagnostics.block_health(jax.tree.map(jnp.ones_like, tree), tree, tree)
    np.testing.assert_allclose(health["diag/critic/grad_norm"],
                               [math.sqrt(2 * BLOCK_PARAMETERS)] * 3, rtol=1e-6)
    assert not np.any(np.asarray(health["diag/critic/update_ratio"]))
    # Two identical twins: their mean is either twin's health.
    np.testing.assert_allclose(diagnostics.forward_health(mlp, twins, inputs)["activation_rms"],
                               diagnostics.forward_health(mlp, variables, inputs)
                               ["activation_rms"], rtol=1e-6)


def _with_singular_values(values, rows=40, seed=0):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(rows, rows)))
    v, _ = np.linalg.qr(rng.normal(size=(len(values), len(values))))
    return (u[:, :len(values)] * np.asarray(values, float)) @ v.T


@pytest.mark.parametrize("values, rank", [
    ([3.0, 3.0, 3.0, 0.0, 0.0, 0.0], 3.0),
    ([1.0] * 16, 16.0),
    ([5.0, 0.0, 0.0, 0.0], 1.0),
    # s^2 = (4, 1): (4 + 1)^2 / (16 + 1)
    ([2.0, 1.0], 25 / 17),
])
def test_effective_rank_of_matrices_with_known_singular_values(values, rank):
    matrix = jnp.asarray(_with_singular_values(values), jnp.float32)
    assert float(diagnostics.effective_rank(matrix)) == pytest.approx(rank, rel=1e-4)


def test_wandb_gets_min_mean_and_max_of_a_per_block_list():
    assert wandb_values({"epoch": 3, "diag/actor/grad_norm": [1.0, 2.0, 6.0]}) == {
        "epoch": 3, "diag/actor/grad_norm/min": 1.0, "diag/actor/grad_norm/mean": 3.0,
        "diag/actor/grad_norm/max": 6.0}


def test_a_run_logs_every_networks_health_per_block_every_epoch(tiny_run):
    config, _, history, path = tiny_run
    blocks = config.depth // LAYERS_PER_BLOCK
    for line in runs.read_metrics(path)[1:]:
        for network in ("actor", "critic/sa_encoder", "critic/goal_encoder"):
            for quantity in ("activation_rms", "dormant_fraction", "grad_norm", "update_ratio"):
                value = line[f"diag/{network}/{quantity}"]
                assert len(value) == blocks and all(map(math.isfinite, value)), (network, value)
            assert 1 <= line[f"diag/{network}/feature_rank"] <= config.width
        for representation in ("phi", "psi"):
            assert 1 <= line[f"diag/{representation}/effective_rank"] <= config.repr_dim
            assert line[f"diag/{representation}/norm"] > 0
        assert all(value > 0 for value in line["diag/actor/update_ratio"])
    assert viz.diagnosed_networks(history) == ["actor", "critic/goal_encoder",
                                               "critic/sa_encoder"]


def test_without_diagnostics_a_run_trains_the_same_numbers_and_logs_none(tiny_run, tmp_path,
                                                                          compile_cache):
    config, _, history, _ = tiny_run
    off = validate(dataclasses.replace(config, diagnostics=False, run_dir=str(tmp_path)))
    _, off_history = train(off, log=lambda _: None)
    with_diagnostics = [{k: v for k, v in line.items() if not diagnostics.is_diagnostic(k)}
                        for line in without_times(history)]
    assert without_times(off_history) == with_diagnostics
    with pytest.raises(ValueError, match="logged no diag/critic/sa_encoder/activation_rms"):
        viz.plot_block_health([runs.run_path(off)], network="critic/sa_encoder")
