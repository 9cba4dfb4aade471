"""var_core: a dependency-light, checkpoint-compatible engine for the Infinity visual-autoregressive model."""
__version__ = "0.1.0"
