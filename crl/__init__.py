"""crl: scalable goal-conditioned contrastive RL in JAX."""

__version__ = "0.1.0"
