"""WGAN-GP in JAX: pure Wasserstein losses, Flax models and a compiled, sharded training step."""

__version__ = "0.3.0"
