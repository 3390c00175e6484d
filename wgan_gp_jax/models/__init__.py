"""Generators and critics as Flax modules; ``build_models`` picks them from a config."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import flax.linen as nn

from wgan_gp_jax.models.dcgan import DCGANCritic, DCGANGenerator
from wgan_gp_jax.models.resnet import ResNetCritic, ResNetGenerator
from wgan_gp_jax.models.toy import ToyCritic, ToyGenerator
from wgan_gp_jax.names import unknown_name_message

if TYPE_CHECKING:  # the core needs no ml_collections: any object with the config's attributes will do
  import ml_collections


@dataclasses.dataclass(frozen=True)
class Models:
  """A generator ``(z, train) -> x``, a critic ``x -> (N,)`` scores, and the latent and sample shapes."""
  generator: nn.Module
  critic: nn.Module
  latent_dim: int
  sample_shape: tuple[int, ...]


MODELS = ("toy_mlp", "dcgan", "resnet")


def sample_shape(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The shape of one example: ``(2,)`` for toy runs, ``(resolution, resolution, channels)`` of ``config.data``."""
  if config.kind == "toy":
    return (2,)
  return (config.data.resolution, config.data.resolution, config.data.channels)


def build_models(config: ml_collections.ConfigDict) -> Models:
  """Builds the models of the ``model`` config group (``name``: ``toy_mlp``, ``dcgan`` or ``resnet``) for the examples
  of the ``data`` group."""
  model = config.model
  shape = sample_shape(config)
  if model.name == "toy_mlp":
    return Models(ToyGenerator(hidden=model.width), ToyCritic(hidden=model.width), model.latent_dim, shape)
  resolution, _, channels = shape
  if model.name == "dcgan":
    return Models(
        DCGANGenerator(resolution=resolution, channels=channels, width=model.width),
        DCGANCritic(width=model.width, layer_norm=model.layer_norm),
        model.latent_dim, shape)
  if model.name == "resnet":
    return Models(
        ResNetGenerator(resolution=resolution, channels=channels, width=model.width),
        ResNetCritic(width=model.width), model.latent_dim, shape)
  raise ValueError(unknown_name_message("model.name", model.name, MODELS))
