"""Energies, contrastive critic losses, actor and temperature losses. Pure functions of arrays.

An energy scores a state-action representation phi against a goal representation psi; the
critic's Q-value is the energy. ``energy_matrix`` scores every phi_i against every psi_j (the
logits of the contrastive losses); ``energy_pairs`` scores matched rows only (the actor's Q).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

ENERGIES = ("l2", "dot", "cosine", "l2_squared")
CONTRASTIVE_LOSSES = ("fwd_infonce", "bwd_infonce", "sym_infonce", "binary_nce")

# Below this squared distance the L2 energy's gradient would blow up (d sqrt(x)/dx at 0).
_SQRT_EPS = 1e-12


def cross_products(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b.T`` at full float32 precision. A default-precision float32 product runs in TF32
    on NVIDIA GPUs, whose error in |a|^2 + |b|^2 - 2 a.b grows with the norms of the
    representations, which the L2 energy does not bound."""
    return jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)


def _squared_distances(phi: jax.Array, psi: jax.Array) -> jax.Array:
    # |a|^2 + |b|^2 - 2 a.b keeps the B x B x D difference tensor out of memory and runs as a
    # matmul; rounding can make it slightly negative, hence the clamp.
    sq = jnp.maximum(jnp.sum(phi**2, -1)[:, None] + jnp.sum(psi**2, -1)[None, :]
                     - 2 * cross_products(phi, psi), 0.0)
    if phi.shape[0] != psi.shape[0]:
        return sq
    # The positive pairs (the diagonal) from their differences, exact whatever the product's
    # precision: a cancellation there would move every row's logit of its own goal.
    pairs = jnp.sum((phi - psi) ** 2, -1)
    return jnp.where(jnp.eye(phi.shape[0], dtype=bool), pairs[:, None], sq)


def _normalize(x: jax.Array) -> jax.Array:
    return x / jnp.sqrt(jnp.sum(x**2, -1, keepdims=True) + _SQRT_EPS)


def energy_matrix(name: str, phi: jax.Array, psi: jax.Array) -> jax.Array:
    """``[B, D] x [B', D] -> [B, B']`` with entry (i, j) = energy(phi_i, psi_j)."""
    if name == "l2":
        return -jnp.sqrt(_squared_distances(phi, psi) + _SQRT_EPS)
    if name == "l2_squared":
        return -_squared_distances(phi, psi)
    if name == "dot":
        return cross_products(phi, psi)
    if name == "cosine":
        return cross_products(_normalize(phi), _normalize(psi))
    raise ValueError(f"unknown energy {name!r}; valid: {', '.join(ENERGIES)}")


def energy_pairs(name: str, phi: jax.Array, psi: jax.Array) -> jax.Array:
    """``[B, D] x [B, D] -> [B]`` with entry i = energy(phi_i, psi_i)."""
    if name == "l2":
        return -jnp.sqrt(jnp.sum((phi - psi) ** 2, -1) + _SQRT_EPS)
    if name == "l2_squared":
        return -jnp.sum((phi - psi) ** 2, -1)
    if name == "dot":
        return jnp.sum(phi * psi, -1)
    if name == "cosine":
        return jnp.sum(_normalize(phi) * _normalize(psi), -1)
    raise ValueError(f"unknown energy {name!r}; valid: {', '.join(ENERGIES)}")


def contrastive_loss(name: str, logits: jax.Array) -> jax.Array:
    """Loss of a square logits matrix whose diagonal holds the positive pairs."""
    diag = jnp.diagonal(logits)
    if name == "fwd_infonce":  # classify the right goal for each state-action
        return -jnp.mean(diag - jax.nn.logsumexp(logits, axis=1))
    if name == "bwd_infonce":  # classify the right state-action for each goal
        return -jnp.mean(diag - jax.nn.logsumexp(logits, axis=0))
    if name == "sym_infonce":
        return (contrastive_loss("fwd_infonce", logits)
                + contrastive_loss("bwd_infonce", logits))
    if name == "binary_nce":
        labels = jnp.eye(logits.shape[0], dtype=logits.dtype)
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))
    raise ValueError(f"unknown contrastive loss {name!r}; valid: {', '.join(CONTRASTIVE_LOSSES)}")


def logsumexp_penalty(logits: jax.Array) -> jax.Array:
    """mean_i logsumexp_j(L_ij)^2: keeps the logits from drifting by a per-row constant."""
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) ** 2)


def critic_loss(energy: str, loss: str, penalty: float, phi: jax.Array,
                psi: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    logits = energy_matrix(energy, phi, psi)
    value = contrastive_loss(loss, logits) + penalty * logsumexp_penalty(logits)
    diag = jnp.diagonal(logits)
    is_argmax = jnp.argmax(logits, axis=1) == jnp.arange(logits.shape[0])
    metrics = {
        "critic_loss": value,
        "logits_pos": jnp.mean(diag),
        # A float count: batch² overflows int32 from a batch of 46,341.
        "logits_neg": (jnp.sum(logits) - jnp.sum(diag)) / float(logits.size - diag.size),
        "categorical_accuracy": jnp.mean(is_argmax),
    }
    return value, metrics


def tanh_gaussian_log_prob(x: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """log pi(tanh(x)) for pre-tanh x ~ N(mean, exp(log_std)^2), summed over action dims."""
    gaussian = -0.5 * ((x - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi)
    return jnp.sum(gaussian - jnp.log(1 - jnp.tanh(x) ** 2 + 1e-6), axis=-1)


def actor_loss(alpha: jax.Array, log_prob: jax.Array, q: jax.Array) -> jax.Array:
    """SAC-style: mean(alpha * log pi(a|s,g) - Q(s, a, g)) with a reparameterised."""
    return jnp.mean(alpha * log_prob - q)


def temperature_loss(log_alpha: jax.Array, log_prob: jax.Array,
                     target_entropy: float) -> jax.Array:
    """alpha * mean(-log pi - target_entropy) with the log-prob held fixed."""
    return jnp.exp(log_alpha) * jnp.mean(-jax.lax.stop_gradient(log_prob) - target_entropy)
