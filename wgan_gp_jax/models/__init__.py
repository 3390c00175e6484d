"""Generators and critics as Flax modules; ``build_models`` picks them from a config."""

import dataclasses

import flax.linen as nn
import ml_collections

from wgan_gp_jax.models.dcgan import DCGANCritic, DCGANGenerator
from wgan_gp_jax.models.resnet import ResNetCritic, ResNetGenerator
from wgan_gp_jax.models.toy import ToyCritic, ToyGenerator


@dataclasses.dataclass(frozen=True)
class Models:
  """A generator ``(z, train) -> x``, a critic ``x -> (N,)`` scores, and the latent and sample shapes."""
  generator: nn.Module
  critic: nn.Module
  latent_dim: int
  sample_shape: tuple[int, ...]


def build_models(config: ml_collections.ConfigDict) -> Models:
  """Builds the models named by ``config.model``: ``toy_mlp``, ``dcgan`` or ``resnet``."""
  name = config.model
  if name == "toy_mlp":
    return Models(ToyGenerator(hidden=config.width), ToyCritic(hidden=config.width), config.latent_dim, (2,))
  sample_shape = (config.resolution, config.resolution, config.channels)
  if name == "dcgan":
    return Models(
        DCGANGenerator(resolution=config.resolution, channels=config.channels, width=config.width),
        DCGANCritic(width=config.width, layer_norm=config.layer_norm),
        config.latent_dim, sample_shape)
  if name == "resnet":
    return Models(
        ResNetGenerator(resolution=config.resolution, channels=config.channels, width=config.width),
        ResNetCritic(width=config.width), config.latent_dim, sample_shape)
  raise ValueError(f"config.model must be one of 'toy_mlp', 'dcgan', 'resnet'; got {name!r}.")
