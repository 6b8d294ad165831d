"""Residual MLP and the contrastive RL networks built from it."""

from crl.networks.agent import Networks, Params, make_networks, sample_tanh_gaussian
from crl.networks.mlp import ResidualMLP

__all__ = ["Networks", "Params", "ResidualMLP", "make_networks", "sample_tanh_gaussian"]
