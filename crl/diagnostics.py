"""Per-block health of the residual networks, computed inside the compiled epoch.

Every quantity is a list over a network's residual blocks (first block first) or, for
representations, a number; metrics.jsonl holds them under ``diag/<network>/<quantity>`` where
``<network>`` is the network's path in the agent's parameters (``actor``,
``critic/sa_encoder``, ...). From the SGD steps, averaged over an epoch's steps:

- ``grad_norm``: the norm of the loss's gradient with respect to the block's parameters;
- ``update_ratio``: ||theta_after - theta_before|| / ||theta_before|| of the block.

From one forward pass per epoch on the first global batch of the epoch's last training step:

- ``activation_rms``: the RMS of the residual stream after the block;
- ``dormant_fraction``: the fraction of the block's Swish units that are dormant, whose mean
  |output| over the batch is at most ``DORMANT_THRESHOLD`` times the mean over the layer's
  units (Sokar et al. 2023; a block whose weights are all zero is wholly dormant);
- ``feature_norm``, ``feature_rank``: the mean norm and the effective rank of the last block's
  output over the batch (what the output layer reads);
- for the contrastive critic, ``diag/phi/...`` and ``diag/psi/...``: ``norm`` and
  ``effective_rank`` of the representations phi(s, a) and psi(g).

The effective rank is the participation ratio of the squared singular values s_i of the
``[batch, dim]`` matrix, (sum s_i^2)^2 / sum s_i^4: k for k equal non-zero singular values, at
most min(batch, dim). It needs only a matrix product of the representations with themselves (no
decomposition: a LAPACK call inside a multi-device CPU program can deadlock XLA's collectives).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

# The variable collection the residual blocks sow their statistics into when it is mutable.
COLLECTION = "diagnostics"
PREFIX = "diag/"
DORMANT_THRESHOLD = 0.025

Tree = Any


def rms(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.mean(jnp.square(x.astype(jnp.float32))))


def dormant_fraction(activations: jax.Array) -> jax.Array:
    """Fraction of dormant units in ``[batch, units]`` outputs of one layer."""
    activity = jnp.mean(jnp.abs(activations.astype(jnp.float32)), axis=0)
    return jnp.mean(activity <= DORMANT_THRESHOLD * jnp.mean(activity))


def effective_rank(matrix: jax.Array) -> jax.Array:
    """Effective rank of the rows ``[n, d]`` of ``matrix``: the participation ratio of its
    squared singular values, (sum s^2)^2 / sum s^4 = tr(G)^2 / ||G||_F^2 with G = M^T M."""
    matrix = matrix.astype(jnp.float32)
    gram = jnp.matmul(matrix.T, matrix, precision=jax.lax.Precision.HIGHEST)
    return jnp.trace(gram) ** 2 / jnp.maximum(jnp.sum(jnp.square(gram)),
                                              jnp.finfo(jnp.float32).tiny)


def representation_health(representation: jax.Array) -> dict[str, jax.Array]:
    return {"norm": jnp.mean(jnp.linalg.norm(representation.astype(jnp.float32), axis=-1)),
            "effective_rank": effective_rank(representation)}


def is_diagnostic(name: str) -> bool:
    return name.startswith(PREFIX)


# ------------------------------------------------------------ where the networks are
def _is_mlp(node: Any) -> bool:
    return (isinstance(node, dict) and isinstance(node.get("params"), dict)
            and "blocks" in node["params"])


def residual_networks(tree: Tree, prefix: str = "") -> dict[str, Tree]:
    """Every ResidualMLP's variables ``{"params": ...}`` in an agent's parameter tree (or a
    tree of the same structure: gradients), by path: ``{"critic/sa_encoder": ...}``."""
    if _is_mlp(tree):
        return {prefix: tree}
    found = {}
    if isinstance(tree, dict):
        for key, child in tree.items():
            found |= residual_networks(child, f"{prefix}/{key}" if prefix else str(key))
    return found


def _stacked_axes(variables: Tree) -> int:
    """How many leading axes stack several networks (2 for the twin critics' 1)."""
    return variables["params"]["input"]["Dense_0"]["kernel"].ndim - 2


def _per_block_squares(blocks: Tree, block_axis: int) -> jax.Array:
    def squares(x):
        axes = tuple(a for a in range(x.ndim) if a != block_axis)
        return jnp.sum(jnp.square(x.astype(jnp.float32)), axis=axes)
    return sum(jax.tree.leaves(jax.tree.map(squares, blocks)))


def block_health(grads: Tree, before: Tree, after: Tree) -> dict[str, jax.Array]:
    """``grad_norm`` and ``update_ratio`` per block of every residual network of an agent's
    parameters, given the gradients and the parameters before and after one step."""
    metrics = {}
    after_nets, grad_nets = residual_networks(after), residual_networks(grads)
    for name, old in residual_networks(before).items():
        axis = _stacked_axes(old)
        blocks = lambda variables: variables["params"]["blocks"]
        change = jax.tree.map(jnp.subtract, blocks(after_nets[name]), blocks(old))
        size = _per_block_squares(blocks(old), axis)
        metrics[f"{PREFIX}{name}/grad_norm"] = jnp.sqrt(
            _per_block_squares(blocks(grad_nets[name]), axis))
        metrics[f"{PREFIX}{name}/update_ratio"] = jnp.sqrt(
            _per_block_squares(change, axis) / jnp.maximum(size, jnp.finfo(jnp.float32).tiny))
    return metrics


def forward_health(mlp: Any, variables: Tree, inputs: jax.Array) -> dict[str, jax.Array]:
    """What one forward pass of ``mlp`` (a ResidualMLP) on ``inputs`` shows, per block and of
    its features; networks stacked along leading axes (twin critics) are averaged."""
    def one(variables):
        _, sown = mlp.apply(variables, inputs, mutable=[COLLECTION])
        stats = sown[COLLECTION]
        features = stats["features"][0]
        return {"activation_rms": stats["blocks"]["activation_rms"][0],
                "dormant_fraction": stats["blocks"]["dormant_fraction"][0],
                "feature_norm": jnp.mean(jnp.linalg.norm(features, axis=-1)),
                "feature_rank": effective_rank(features)}

    leading = _stacked_axes(variables)
    apply = one
    for _ in range(leading):
        apply = jax.vmap(apply)
    stats = apply(variables)
    return jax.tree.map(lambda x: jnp.mean(x, axis=tuple(range(leading))), stats)


def network_health(networks: dict[str, tuple[Any, jax.Array]], params: Tree,
                   representations: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """``diag/...`` of every network ``{name: (mlp, inputs)}`` whose variables are at
    ``name`` in ``params``, and of the named representations."""
    variables = residual_networks(params)
    metrics = {}
    for name, (mlp, inputs) in networks.items():
        for quantity, value in forward_health(mlp, variables[name], inputs).items():
            metrics[f"{PREFIX}{name}/{quantity}"] = value
    for name, representation in representations.items():
        for quantity, value in representation_health(representation).items():
            metrics[f"{PREFIX}{name}/{quantity}"] = value
    return metrics
