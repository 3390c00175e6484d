"""Generators and critics as Flax modules; ``build_models`` picks them from a config."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import flax.linen as nn
import jax.numpy as jnp

from wgan_gp_jax import kernels, objectives
from wgan_gp_jax.models import conditional, paper_architectures
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
  num_classes: int = 0  # > 0: a class-conditional generator and a classifying critic (models.conditional)


# The paper's robustness experiment's architectures (``paper_architectures``) follow ``toy_mlp``, ``dcgan`` (its
# baseline) and ``resnet`` (the CIFAR-10 ResNet).
MODELS = ("toy_mlp", "dcgan", "resnet") + paper_architectures.ARCHITECTURES[1:]
CRITIC_NORM_CHOICES = ("auto",) + paper_architectures.CRITIC_NORMS  # model.critic_norm
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


# Models older than ``model.critic_norm``: under ``"auto"`` their critics stay as they were (``dcgan``: layer norm
# where ``model.layer_norm``, else none; the others none), and ``toy_mlp`` and ``resnet`` take no other.
_CRITIC_NORMS_BEFORE_THE_KEY = {"toy_mlp": ("none",), "resnet": ("none",), "dcgan": paper_architectures.CRITIC_NORMS}


def critic_normalization(config: ml_collections.ConfigDict) -> str:
  """The critic's normalisation, ``"none"``, ``"layer"`` or ``"batch"``, from ``model.critic_norm``, ``model.name``
  and the objective ``config.objective`` builds.

  ``"auto"`` (the default) is: for the architectures of the paper's robustness experiment other than ``dcgan``
  (``paper_architectures``), its rule, ``paper_architectures.paper_critic_norm`` (layer norm where the objective
  penalises input gradients, batch norm where it allows a batch-norm critic; ``no_norm``: none); for ``dcgan``
  layer norm where ``model.layer_norm`` and none otherwise, its critic before this key (the robustness experiment's
  cells name the paper's rule for it, ``experiments/configs/robustness_cell.py``); none for ``toy_mlp`` and
  ``resnet``.

  Raises ``ValueError`` (one line, naming the key) for an unknown choice, a normalisation the architecture does not
  have, ``model.layer_norm=True`` beside another explicit choice, and ``"batch"`` with an objective that does not allow
  a batch-norm critic (``objectives.Objective.allows_critic_batch_norm``): a gradient penalty needs each example's
  score to depend on that example alone, and batch norm makes it depend on the whole batch.
  """
  model = config.model
  choice = getattr(model, "critic_norm", "auto")
  if choice not in CRITIC_NORM_CHOICES:
    raise ValueError(unknown_name_message("model.critic_norm", choice, CRITIC_NORM_CHOICES))
  layer_norm = bool(getattr(model, "layer_norm", False)) and model.name not in ("toy_mlp", "resnet")
  if layer_norm and choice not in ("auto", "layer"):
    raise ValueError(f"model.layer_norm=True asks for layer norm in the critic and model.critic_norm={choice!r} for"
                     " another: set only one of them")
  supported = _CRITIC_NORMS_BEFORE_THE_KEY.get(model.name) or paper_architectures.SUPPORTED_CRITIC_NORMS[model.name]
  objective = None
  if choice == "auto":
    if layer_norm:
      choice = "layer"
    elif model.name in _CRITIC_NORMS_BEFORE_THE_KEY or supported == ("none",):
      choice = "none"
    else:
      objective = objectives.build_objective(config.objective)
      choice = paper_architectures.paper_critic_norm(allows_batch_norm=objective.allows_critic_batch_norm)
  if choice not in supported:
    raise ValueError(f"model.critic_norm={choice!r}: the {model.name} critic takes only {', '.join(supported)}")
  if choice == "batch":
    objective = objective or objectives.build_objective(config.objective)
    if not objective.allows_critic_batch_norm:
      raise ValueError(f"model.critic_norm='batch' cannot train with objective.name={config.objective.name!r}: its"
                       " input-gradient penalty needs each example's score to depend on that example alone, and batch"
                       " norm makes it depend on the whole batch; use 'layer' (as the paper) or 'none'")
  return choice


def build_models(config: ml_collections.ConfigDict, *, platform: str | None = None) -> Models:
  """``_build_models``, class-conditional where ``model.num_classes > 0``: the generator takes labels
  (``conditional.ClassConditionalGenerator``) and the critic gives ``1 + num_classes`` outputs."""
  models = _build_models(config, platform=platform)
  num_classes = config.model.get("num_classes", 0)
  if not num_classes:
    return models
  if isinstance(models.generator, ResNetGenerator):  # conditioned by its batch norms, as the authors' ResNet
    generator = models.generator.clone(num_classes=num_classes)
  else:
    generator = conditional.ClassConditionalGenerator(models.generator, num_classes)
  return dataclasses.replace(models, generator=generator, critic=models.critic.clone(outputs=1 + num_classes),
                             num_classes=num_classes)


def _build_models(config: ml_collections.ConfigDict, *, platform: str | None = None) -> Models:
  """Builds the models of the ``model`` config group (``name``: one of ``MODELS``; ``dtype``: ``float32`` or
  ``bfloat16``, see ``compute_dtype``; ``kernels``, resolved for ``platform`` by ``resolve_kernels``; the critic's
  normalisation, ``critic_normalization``) for the examples of the ``data`` group.

  The image models' layers are the CPU kernels' or plain flax's as ``kernels`` resolves, with the same variables under
  both; the toy MLPs are plain flax (``nn.Dense``) under every choice.
  """
  model = config.model
  if model.name not in MODELS:
    raise ValueError(unknown_name_message("model.name", model.name, MODELS))
  shape = sample_shape(config)
  dtype = compute_dtype(model)
  choice = resolve_kernels(model.kernels, platform)
  critic_norm = critic_normalization(config)
  if model.name == "toy_mlp":
    return Models(ToyGenerator(hidden=model.width, dtype=dtype), ToyCritic(hidden=model.width, dtype=dtype),
                  model.latent_dim, shape)
  resolution, _, channels = shape
  if model.name == "dcgan":
    if critic_norm == "batch":
      critic = paper_architectures.ConvCritic(width=model.width, norm="batch", dtype=dtype, kernels=choice)
    else:
      critic = DCGANCritic(width=model.width, layer_norm=critic_norm == "layer", dtype=dtype, kernels=choice)
    return Models(
        DCGANGenerator(resolution=resolution, channels=channels, width=model.width, dtype=dtype, kernels=choice),
        critic, model.latent_dim, shape)
  if model.name == "resnet":
    return Models(
        ResNetGenerator(resolution=resolution, channels=channels, width=model.width, dtype=dtype, kernels=choice),
        ResNetCritic(width=model.width, dtype=dtype, kernels=choice), model.latent_dim, shape)
  generator, critic = paper_architectures.build(model.name, resolution=resolution, channels=channels,
                                                width=model.width, critic_norm=critic_norm, dtype=dtype,
                                                kernels=choice)
  return Models(generator, critic, model.latent_dim, shape)
