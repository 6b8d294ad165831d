import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl.networks import ResidualMLP, make_networks
from crl.networks.agent import LOG_STD_MAX, LOG_STD_MIN


def numpy_forward(params, x, depth, residual=True, layer_norm=True, activation="swish"):
    """Independent forward pass of the residual MLP from its parameter tree."""
    def dense_norm_swish(p, h):
        h = h @ np.asarray(p["Dense_0"]["kernel"]) + np.asarray(p["Dense_0"]["bias"])
        if layer_norm:
            mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
            h = (h - mu) / np.sqrt(var + 1e-6)
            h = h * np.asarray(p["LayerNorm_0"]["scale"]) + np.asarray(p["LayerNorm_0"]["bias"])
        return h / (1 + np.exp(-h)) if activation == "swish" else np.maximum(h, 0)

    p = params["params"]
    h = dense_norm_swish(p["input"], x)
    for block in range(depth // 4):
        y = h
        for layer in range(4):
            layer_params = jax.tree.map(lambda a, b=block: np.asarray(a)[b],
                                        p["blocks"][f"DenseNormSwish_{layer}"])
            y = dense_norm_swish(layer_params, y)
        h = h + y if residual else y
    return h @ np.asarray(p["output"]["kernel"]) + np.asarray(p["output"]["bias"])


def test_residual_mlp_matches_an_independent_forward_pass():
    x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    model = ResidualMLP(depth=8, width=16, out_dim=4)
    params = model.init(jax.random.PRNGKey(0), x)
    # Perturb the zero-initialised biases and LayerNorm parameters so the check covers them.
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(1), p.shape),
                          params)
    np.testing.assert_allclose(model.apply(params, x), numpy_forward(params, x, 8), rtol=2e-4,
                               atol=2e-4)


@pytest.mark.parametrize("switches", [{"residual": False}, {"layer_norm": False},
                                      {"activation": "relu"}])
def test_each_ablation_switch_changes_the_network_as_stated(switches):
    """The paper's ablations, one ingredient off at a time: the forward pass is the NumPy one
    without skip connections, without LayerNorm (and its parameters), or with ReLU, and differs
    from the full network's on the same parameters."""
    x = np.random.default_rng(2).normal(size=(6, 5)).astype(np.float32)
    full = ResidualMLP(depth=8, width=16, out_dim=4)
    ablated = ResidualMLP(depth=8, width=16, out_dim=4, **switches)
    params = ablated.init(jax.random.PRNGKey(0), x)
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(1), p.shape),
                          params)
    names = {jax.tree_util.keystr(path) for path, _ in
             jax.tree_util.tree_leaves_with_path(params)}
    assert any("LayerNorm" in name for name in names) == switches.get("layer_norm", True)
    np.testing.assert_allclose(ablated.apply(params, x), numpy_forward(params, x, 8, **switches),
                               rtol=2e-4, atol=2e-4)
    if "layer_norm" not in switches:  # same parameter tree: the switch alone changes the output
        assert not np.allclose(ablated.apply(params, x), full.apply(params, x), atol=1e-3)


def test_an_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="activation='tanh' is unknown; valid: swish, relu"):
        ResidualMLP(depth=4, width=8, out_dim=2, activation="tanh").init(
            jax.random.PRNGKey(0), jnp.zeros((1, 3)))


def test_blocks_are_stacked_and_initialised_as_in_the_reference():
    model = ResidualMLP(depth=64, width=32, out_dim=8)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 10)))["params"]
    kernel = params["blocks"]["DenseNormSwish_0"]["Dense_0"]["kernel"]
    assert kernel.shape == (16, 32, 32)  # 16 blocks stacked on the leading axis
    assert not np.allclose(kernel[0], kernel[1])  # every block has its own initialisation
    # variance_scaling(1/3, fan_in, uniform): U(-b, b) with b = sqrt(1 / fan_in).
    bound = np.sqrt(1 / 32)
    assert np.abs(kernel).max() <= bound
    np.testing.assert_allclose(np.var(kernel), bound**2 / 3, rtol=0.05)
    input_kernel = params["input"]["Dense_0"]["kernel"]
    assert np.abs(input_kernel).max() <= np.sqrt(1 / 10)
    for leaf_path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if "bias" in jax.tree_util.keystr(leaf_path):
            np.testing.assert_array_equal(leaf, 0.0)
        assert leaf.dtype == jnp.float32


def _equation_count(depth: int) -> int:
    model = ResidualMLP(depth=depth, width=8, out_dim=2)
    x = jnp.zeros((2, 3))
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)

    def loss(p):
        return jnp.sum(model.apply(p, x))

    return _count_equations(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)


def _count_equations(jaxpr) -> int:
    """Equations of a jaxpr including those of nested jaxprs (scan bodies, remat, ...)."""
    total = 0
    for eqn in jaxpr.eqns:
        total += 1
        for param in eqn.params.values():
            for inner in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(inner, "jaxpr", inner)
                if hasattr(inner, "eqns"):
                    total += _count_equations(inner)
    return total


def test_traced_program_does_not_grow_with_depth():
    assert _equation_count(4) == _equation_count(1024)


@pytest.mark.parametrize("mode", ["elementwise", "blocks"])
def test_remat_changes_memory_not_results(mode):
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 6))
    plain = ResidualMLP(depth=12, width=16, out_dim=3, remat="none")
    remat = ResidualMLP(depth=12, width=16, out_dim=3, remat=mode)
    params = plain.init(jax.random.PRNGKey(1), x)

    def loss(model, p):
        return jnp.sum(model.apply(p, x) ** 2)

    np.testing.assert_allclose(remat.apply(params, x), plain.apply(params, x), rtol=1e-6)
    grads = [jax.grad(lambda p, m=m: loss(m, p))(params) for m in (plain, remat)]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), *grads)

    def stored_bytes(model):
        grad = jax.jit(jax.grad(lambda p: loss(model, p)))
        return grad.lower(params).compile().memory_analysis().temp_size_in_bytes

    assert stored_bytes(remat) < stored_bytes(plain)


@pytest.mark.parametrize("depth", [0, 3, 6, -4])
def test_depth_must_be_a_positive_multiple_of_four(depth):
    with pytest.raises(ValueError, match=f"depth={depth}"):
        ResidualMLP(depth=depth, width=8, out_dim=2).init(jax.random.PRNGKey(0), jnp.zeros(3))


def test_agent_networks_shapes_depths_and_log_std_range():
    depths = {"actor": 8, "critic": 4}
    nets = make_networks(state_size=5, goal_size=2, action_size=3, repr_dim=7,
                         mlp=lambda family, out: ResidualMLP(depths[family], 16, out))
    params = nets.init(jax.random.PRNGKey(0))
    assert params["actor"]["params"]["blocks"]["DenseNormSwish_0"]["Dense_0"]["kernel"].shape[0] \
        == 2
    sa_blocks = params["critic"]["sa_encoder"]["params"]["blocks"]
    assert sa_blocks["DenseNormSwish_0"]["Dense_0"]["kernel"].shape[0] == 1
    state, goal, action = jnp.ones((4, 5)), jnp.ones((4, 2)), jnp.ones((4, 3))
    assert nets.encode_state_action(params["critic"], state, action).shape == (4, 7)
    assert nets.encode_goal(params["critic"], goal).shape == (4, 7)
    # Huge inputs saturate the squashing: log_std stays inside [-5, 2].
    for scale in (1.0, 1e4, -1e4):
        mean, log_std = nets.policy(params["actor"], scale * state, scale * goal)
        assert mean.shape == log_std.shape == (4, 3)
        assert np.all(log_std >= LOG_STD_MIN) and np.all(log_std <= LOG_STD_MAX)
