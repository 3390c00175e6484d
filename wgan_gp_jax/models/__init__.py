"""Generators and critics as Flax modules; ``build_models`` picks them from a config."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import flax.linen as nn
import jax.numpy as jnp

from wgan_gp_jax import kernels
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
DTYPES = ("float32", "bfloat16")  # model.dtype
PARAM_DTYPES = ("float32",)  # model.param_dtype
KERNEL_CHOICES = kernels.CHOICES  # model.kernels


def compute_dtype(model: ml_collections.ConfigDict) -> jnp.dtype:
  """The dtype of the activations and products, ``model.dtype``, after checking it and ``model.param_dtype``.

  Whatever ``model.dtype``, the parameters, their gradients, the optimizer states, batch-norm statistics and the EMA
  are float32, and so are the generator's samples and the critic's scores: losses and penalties are computed in
  float32. Parameters in bfloat16 are refused: bfloat16 keeps 8 significant bits, and a step of the learning rate
  (Adam's largest) leaves 26% of the celeba32 generator's initial weights and 2% of its critic's unchanged at its
  2e-4 (43% and 28% at the paper's 1e-4); the others move by a multiple of their spacing, not by the step.
  """
  if model.dtype not in DTYPES:
    raise ValueError(unknown_name_message("model.dtype", model.dtype, DTYPES))
  if model.param_dtype == "bfloat16":
    raise ValueError("model.param_dtype='bfloat16' is not supported: bfloat16 weights lose Adam's steps (a step of"
                     " 2e-4 leaves 26% of the celeba32 generator's initial weights unchanged); model.dtype='bfloat16'"
                     " computes in bfloat16 with float32 parameters")
  if model.param_dtype not in PARAM_DTYPES:
    raise ValueError(unknown_name_message("model.param_dtype", model.param_dtype, PARAM_DTYPES))
  return jnp.dtype(model.dtype)


def sample_shape(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The shape of one example: ``(2,)`` for toy runs, ``(resolution, resolution, channels)`` of ``config.data``."""
  if config.kind == "toy":
    return (2,)
  return (config.data.resolution, config.data.resolution, config.data.channels)


def resolve_kernels(choice: str, platform: str | None = None) -> str:
  """The layers ``model.kernels`` stands for on ``platform`` (default ``jax.default_backend()``): ``"cpu"`` (the CPU
  kernels, ``wgan_gp_jax.kernels``) or ``"xla"`` (plain ``flax.linen`` layers); ``"auto"`` is ``"cpu"`` on the CPU
  platform and ``"xla"`` on any other. Raises ``ValueError`` naming ``model.kernels`` for an unknown choice."""
  return kernels.resolve(choice, platform, setting="model.kernels")


def build_models(config: ml_collections.ConfigDict, *, platform: str | None = None) -> Models:
  """Builds the models of the ``model`` config group (``name``: ``toy_mlp``, ``dcgan`` or ``resnet``; ``dtype``:
  ``float32`` or ``bfloat16``, see ``compute_dtype``; ``kernels``, resolved for ``platform`` by ``resolve_kernels``)
  for the examples of the ``data`` group.

  The image models' layers are the CPU kernels' or plain flax's as ``kernels`` resolves, with the same variables under
  both; the toy MLPs are plain flax (``nn.Dense``) under every choice.
  """
  model = config.model
  shape = sample_shape(config)
  dtype = compute_dtype(model)
  choice = resolve_kernels(model.kernels, platform)
  if model.name == "toy_mlp":
    return Models(ToyGenerator(hidden=model.width, dtype=dtype), ToyCritic(hidden=model.width, dtype=dtype),
                  model.latent_dim, shape)
  resolution, _, channels = shape
  if model.name == "dcgan":
    return Models(
        DCGANGenerator(resolution=resolution, channels=channels, width=model.width, dtype=dtype, kernels=choice),
        DCGANCritic(width=model.width, layer_norm=model.layer_norm, dtype=dtype, kernels=choice),
        model.latent_dim, shape)
  if model.name == "resnet":
    return Models(
        ResNetGenerator(resolution=resolution, channels=channels, width=model.width, dtype=dtype, kernels=choice),
        ResNetCritic(width=model.width, dtype=dtype, kernels=choice), model.latent_dim, shape)
  raise ValueError(unknown_name_message("model.name", model.name, MODELS))
