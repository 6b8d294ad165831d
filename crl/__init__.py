"""crl: scalable goal-conditioned contrastive RL in JAX."""

__version__ = "0.1.0"
__all__ = ["load_run"]


def __getattr__(name: str):
    # Imported on first use: `import crl` (and every CLI's input check) stays free of JAX.
    if name == "load_run":
        from crl.evaluate import load_run

        return load_run
    raise AttributeError(f"module 'crl' has no attribute {name!r}")
