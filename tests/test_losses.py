import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl import losses

RNG = np.random.default_rng(0)
PHI = RNG.normal(size=(5, 3)).astype(np.float32)
PSI = RNG.normal(size=(5, 3)).astype(np.float32)


def np_energy(name, phi, psi):
    diff = phi[:, None, :] - psi[None, :, :]
    if name == "l2":
        return -np.sqrt((diff**2).sum(-1))
    if name == "l2_squared":
        return -(diff**2).sum(-1)
    if name == "dot":
        return phi @ psi.T
    if name == "cosine":
        unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
        return unit(phi) @ unit(psi).T
    raise AssertionError(name)


def np_logsumexp(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


@pytest.mark.parametrize("name", losses.ENERGIES)
def test_energy_matrix_and_pairs_match_numpy(name):
    expected = np_energy(name, PHI, PSI)
    np.testing.assert_allclose(losses.energy_matrix(name, PHI, PSI), expected, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(losses.energy_pairs(name, PHI, PSI), np.diag(expected),
                               rtol=1e-5, atol=1e-5)


def test_l2_energy_by_hand():
    phi = jnp.array([[0.0, 0.0], [1.0, 1.0]])
    psi = jnp.array([[3.0, 4.0], [1.0, 1.0]])
    np.testing.assert_allclose(losses.energy_matrix("l2", phi, psi),
                               [[-5.0, -np.sqrt(2)], [-np.sqrt(13), 0.0]], atol=1e-5)


def test_l2_energy_gradient_is_finite_at_zero_distance():
    grad = jax.grad(lambda p: losses.energy_pairs("l2", p, p).sum())(jnp.ones((2, 3)))
    assert np.all(np.isfinite(grad))
    grad = jax.grad(lambda p: losses.energy_matrix("l2", p, p).sum())(jnp.ones((2, 3)))
    assert np.all(np.isfinite(grad))


def test_contrastive_losses_match_numpy():
    logits = RNG.normal(size=(6, 6)).astype(np.float32)
    diag = np.diag(logits)
    fwd = -np.mean(diag - np_logsumexp(logits, 1))
    bwd = -np.mean(diag - np_logsumexp(logits, 0))
    sig = 1 / (1 + np.exp(-logits))
    eye = np.eye(6)
    bce = -np.mean(eye * np.log(sig) + (1 - eye) * np.log(1 - sig))
    for name, expected in [("fwd_infonce", fwd), ("bwd_infonce", bwd),
                           ("sym_infonce", fwd + bwd), ("binary_nce", bce)]:
        np.testing.assert_allclose(losses.contrastive_loss(name, logits), expected, rtol=1e-5,
                                   err_msg=name)


def test_infonce_by_hand():
    # Two pairs, positives score 0 and negatives log(3): each row's softmax gives the positive
    # probability 1/4, so the loss is log 4.
    logits = jnp.array([[0.0, np.log(3.0)], [np.log(3.0), 0.0]])
    np.testing.assert_allclose(losses.contrastive_loss("fwd_infonce", logits), np.log(4.0),
                               rtol=1e-6)


def test_logsumexp_penalty_and_critic_loss():
    logits = np_energy("l2", PHI, PSI)
    penalty = np.mean(np_logsumexp(logits, 1) ** 2)
    np.testing.assert_allclose(losses.logsumexp_penalty(logits), penalty, rtol=1e-5)
    value, metrics = losses.critic_loss("l2", "fwd_infonce", 0.1, PHI, PSI)
    expected = -np.mean(np.diag(logits) - np_logsumexp(logits, 1)) + 0.1 * penalty
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    accuracy = np.mean(np.argmax(logits, 1) == np.arange(5))
    np.testing.assert_allclose(metrics["categorical_accuracy"], accuracy)


def test_tanh_gaussian_log_prob_matches_change_of_variables():
    mean = np.array([[0.3, -0.2]], np.float32)
    log_std = np.array([[-0.5, 0.1]], np.float32)
    x = np.array([[0.7, -1.1]], np.float32)
    std = np.exp(log_std)
    gauss = -0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
    expected = np.sum(gauss - np.log(1 - np.tanh(x) ** 2 + 1e-6), -1)
    np.testing.assert_allclose(losses.tanh_gaussian_log_prob(x, mean, log_std), expected,
                               rtol=1e-5)


def test_tanh_gaussian_density_integrates_to_one():
    # 1-D density of a = tanh(x) integrated over a in (-1, 1) by the trapezoid rule.
    a = np.linspace(-0.999, 0.999, 20001, dtype=np.float64)
    x = np.arctanh(a).astype(np.float32)[:, None]
    log_p = losses.tanh_gaussian_log_prob(x, np.float32([[0.4]]), np.float32([[-0.3]]))
    assert abs(np.trapezoid(np.exp(np.asarray(log_p, np.float64)), a) - 1) < 5e-3


def test_actor_and_temperature_losses():
    log_prob = jnp.array([-1.0, -3.0])
    q = jnp.array([-2.0, -4.0])
    # alpha * log_prob - Q = 0.5 * -1 + 2 = 1.5 and 0.5 * -3 + 4 = 2.5: mean 2.
    np.testing.assert_allclose(losses.actor_loss(jnp.float32(0.5), log_prob, q), 2.0)
    log_alpha = jnp.float32(np.log(2.0))
    # alpha * mean(-log_prob - target) = 2 * mean(1 + 4, 3 + 4) = 12
    np.testing.assert_allclose(losses.temperature_loss(log_alpha, log_prob, -4.0), 12.0,
                               rtol=1e-6)
    # The log-prob is held fixed: the temperature loss gives it no gradient.
    grad = jax.grad(lambda lp: losses.temperature_loss(log_alpha, lp, -4.0))(log_prob)
    np.testing.assert_array_equal(grad, 0.0)
    # d/dlog_alpha = alpha * mean(-log_prob - target): entropy below target raises alpha.
    grad_alpha = jax.grad(losses.temperature_loss)(log_alpha, log_prob, -4.0)
    np.testing.assert_allclose(grad_alpha, 12.0, rtol=1e-6)


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="valid: l2"):
        losses.energy_matrix("l3", PHI, PSI)
    with pytest.raises(ValueError, match="fwd_infonce"):
        losses.contrastive_loss("nce", np.zeros((2, 2)))


def test_critic_loss_traces_for_batches_whose_square_overflows_int32():
    """Batch 50,000 (valid with 512 envs of 1000 steps) has 2.5e9 logits: the metrics must not
    count them in int32. Traced only (eval_shape): no 10 GB matrix is made."""
    rows = jax.ShapeDtypeStruct((50_000, 8), jnp.float32)
    _, metrics = jax.eval_shape(
        lambda phi, psi: losses.critic_loss("l2", "fwd_infonce", 0.1, phi, psi), rows, rows)
    assert metrics["logits_neg"].dtype == jnp.float32
    # The same metrics on a batch of 3, against NumPy from their definitions.
    phi = np.float32([[0, 0.5], [1, 0], [0, 2]])
    psi = np.float32([[0, 1], [1, 0], [3, 0]])
    _, small = losses.critic_loss("l2", "fwd_infonce", 0.1, phi, psi)
    energies = -np.linalg.norm(phi[:, None] - psi[None], axis=-1)
    off_diagonal = energies[~np.eye(3, dtype=bool)]
    np.testing.assert_allclose(small["logits_pos"], np.mean(np.diag(energies)), rtol=1e-6)
    np.testing.assert_allclose(small["logits_neg"], np.mean(off_diagonal), rtol=1e-6)
    # Row argmaxes: row 0 -> 0 (energy -0.5 against -1.12, -3.04), row 1 -> 1 (0 against
    # -1.41, -2), row 2 -> 0 (-1 against -2.24, -3.61): 2 of 3 correct.
    np.testing.assert_allclose(small["categorical_accuracy"], 2 / 3, rtol=1e-6)


def _round_to_tf32(x: jax.Array) -> jax.Array:
    """float32 rounded to TF32's 10 explicit mantissa bits (round to nearest), as an NVIDIA
    tensor core reads a default-precision float32 matmul's inputs."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    rounded = (bits + jnp.uint32(0x1000)) & jnp.uint32(0xFFFFE000)
    return jax.lax.bitcast_convert_type(rounded, jnp.float32)


@pytest.mark.parametrize("rounding", ["tf32", "bfloat16"])
def test_positive_pair_distances_stay_exact_when_the_product_is_rounded(monkeypatch, rounding):
    """Representations of norm about 100 whose positive pairs are 1 apart: with the matmul's
    inputs rounded as a GPU's TF32 (or bfloat16) product rounds them, simulated here, the
    diagonal of the L2 energy still matches float64 to 1e-4, while the plain
    |a|^2 + |b|^2 - 2 a.b under the same rounding is off by more than 10%."""
    round_ = _round_to_tf32 if rounding == "tf32" else (
        lambda x: x.astype(jnp.bfloat16).astype(jnp.float32))
    monkeypatch.setattr(losses, "cross_products",
                        lambda a, b: round_(a) @ round_(b).T)
    rng = np.random.default_rng(0)
    phi = rng.normal(size=(32, 64)) * 100 / 8
    psi = phi + rng.normal(size=(32, 64)) / 8
    reference = np.linalg.norm(phi - psi, axis=-1)
    ours = -np.diagonal(np.asarray(losses.energy_matrix("l2", jnp.asarray(phi, jnp.float32),
                                                        jnp.asarray(psi, jnp.float32))))
    np.testing.assert_allclose(ours, reference, rtol=1e-4)
    p32, s32 = jnp.asarray(phi, jnp.float32), jnp.asarray(psi, jnp.float32)
    naive = (jnp.sum(p32**2, -1) + jnp.sum(s32**2, -1)
             - 2 * jnp.diagonal(round_(p32) @ round_(s32).T))
    naive = np.sqrt(np.maximum(np.asarray(naive), 0.0))
    assert np.max(np.abs(naive - reference) / reference) > 0.1


def test_the_energy_matrix_asks_for_full_precision_products():
    phi = jnp.ones((4, 3))
    for name in ("l2", "l2_squared", "dot", "cosine"):
        jaxpr = str(jax.make_jaxpr(lambda a, b, name=name: losses.energy_matrix(name, a, b))(
            phi, phi))
        assert "precision=(Precision.HIGHEST, Precision.HIGHEST)" in jaxpr, name
