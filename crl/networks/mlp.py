"""The residual MLP behind every network of crl.

Input Dense -> LayerNorm -> Swish, then ``depth // 4`` residual blocks ``x + f(x)`` where ``f`` is
four [Dense -> LayerNorm -> Swish], then an output Dense. The blocks' parameters are stacked along a
leading axis and the stack is a ``scan``: one block is traced and compiled whatever the depth, so
compile time does not grow with depth.

The paper's ablations switch its three ingredients off one at a time: ``residual=False`` drops
the skip connection (a plain MLP of the same layers), ``layer_norm=False`` the LayerNorms, and
``activation="relu"`` replaces Swish.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from crl import diagnostics

LAYERS_PER_BLOCK = 4

# What the backward pass recomputes instead of storing (see ``ResidualMLP.remat``).
REMAT_MODES = ("elementwise", "blocks", "none")
ACTIVATIONS = {"swish": nn.swish, "relu": nn.relu}


def kernel_init() -> nn.initializers.Initializer:
    return nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


class DenseNormSwish(nn.Module):
    """One layer: Dense -> LayerNorm -> Swish (or without its LayerNorm, or with ReLU)."""

    width: int
    dtype: jnp.dtype = jnp.float32
    layer_norm: bool = True
    activation: str = "swish"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Dense(self.width, kernel_init=kernel_init(), dtype=self.dtype,
                     param_dtype=jnp.float32)(x)
        if self.layer_norm:
            # LayerNorm statistics stay in float32 even when the matmuls run in bfloat16.
            x = nn.LayerNorm(dtype=jnp.float32, param_dtype=jnp.float32)(x)
        return ACTIVATIONS[self.activation](x)


class ResidualBlock(nn.Module):
    """``x + f(x)``; the signature ``(carry, _) -> (carry, None)`` is what ``nn.scan`` expects.

    Applied with the diagnostics collection mutable, it sows its health (crl.diagnostics).
    """

    width: int
    dtype: jnp.dtype = jnp.float32
    residual: bool = True
    layer_norm: bool = True
    activation: str = "swish"

    @nn.compact
    def __call__(self, x: jax.Array, _: None) -> tuple[jax.Array, None]:
        layers = [x]
        for _layer in range(LAYERS_PER_BLOCK):
            layers.append(DenseNormSwish(self.width, self.dtype, self.layer_norm,
                                         self.activation)(layers[-1]))
        x = x + layers[-1] if self.residual else layers[-1]
        if self.is_mutable_collection(diagnostics.COLLECTION) and not self.is_initializing():
            dormant = [diagnostics.dormant_fraction(y) for y in layers[1:]]
            self.sow(diagnostics.COLLECTION, "activation_rms", diagnostics.rms(x))
            self.sow(diagnostics.COLLECTION, "dormant_fraction", jnp.mean(jnp.stack(dormant)))
        return x, None


def _remat(block: type[nn.Module], mode: str) -> type[nn.Module]:
    if mode == "none":
        return block
    # prevent_cse=False is safe (and faster) inside a scan, which already keeps XLA from
    # merging the recomputation back into the forward pass.
    if mode == "blocks":
        return nn.remat(block, prevent_cse=False)
    if mode == "elementwise":
        return nn.remat(block, prevent_cse=False,
                        policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
    raise ValueError(f"remat={mode!r} is unknown; valid: {', '.join(REMAT_MODES)}")


class ResidualMLP(nn.Module):
    """Residual MLP of ``depth`` Dense layers inside its residual blocks (``depth % 4 == 0``).

    ``remat`` chooses what the backward pass recomputes instead of storing:
    ``"elementwise"`` stores each Dense output and recomputes LayerNorm and Swish (a quarter of
    the activation memory of ``"none"``, and faster on the CPU, where storing everything is
    slower than recomputing it); ``"blocks"`` stores only each block's input and recomputes the
    block (least memory: the residual stream plus one block); ``"none"`` stores everything.
    """

    depth: int
    width: int
    out_dim: int
    remat: str = "elementwise"
    dtype: jnp.dtype = jnp.float32
    residual: bool = True
    layer_norm: bool = True
    activation: str = "swish"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.depth <= 0 or self.depth % LAYERS_PER_BLOCK:
            raise ValueError(f"depth={self.depth} must be a positive multiple of 4")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r} is unknown; valid: "
                             f"{', '.join(ACTIVATIONS)}")
        x = DenseNormSwish(self.width, self.dtype, self.layer_norm, self.activation,
                           name="input")(x)
        blocks = nn.scan(
            _remat(ResidualBlock, self.remat),
            variable_axes={"params": 0, diagnostics.COLLECTION: 0},
            split_rngs={"params": True},
            length=self.depth // LAYERS_PER_BLOCK,
        )
        x, _ = blocks(self.width, self.dtype, self.residual, self.layer_norm, self.activation,
                      name="blocks")(x, None)
        if self.is_mutable_collection(diagnostics.COLLECTION) and not self.is_initializing():
            self.sow(diagnostics.COLLECTION, "features", x.astype(jnp.float32))
        return nn.Dense(self.out_dim, kernel_init=kernel_init(), dtype=self.dtype,
                        param_dtype=jnp.float32, name="output")(x).astype(jnp.float32)
