"""Fingerprints of unconditional configs' programs: the sha256 (first 16 hex digits) of the initialisation, training
iteration and sampling programs as lowered for the CPU (StableHLO text, without source locations). Equal fingerprints
mean the same computations, so the same initial state and samples bit for bit on any one machine (the values
themselves depend on the machine and on XLA's flags: the suite compiles at -O0)."""

import hashlib

import jax
import jax.numpy as jnp

from wgan_gp_jax import configuration, train
from wgan_gp_jax.models import build_models
from experiments.configs import celeba32, cifar10_resnet, toy_8gaussians


def _sha(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()[:16]


def _lowered_text(function, *arguments) -> str:
  return jax.jit(function).trace(*arguments).lower(lowering_platforms=("cpu",)).as_text()


def fingerprint(config) -> dict[str, str]:
  models = build_models(config)
  parts = configuration.training_parts(config)
  init = lambda: train.init_state(models, parts.optimizers, seed=config.seed, ema=parts.ema is not None)
  state = jax.eval_shape(init)
  iteration = train.make_train_iteration(models, parts.objective, parts.optimizers, n_critic=config.n_critic,
                                         augmentation=parts.augmentation, ema=parts.ema)
  real = jax.ShapeDtypeStruct((config.n_critic, config.batch_size) + models.sample_shape, jnp.float32)
  z = jax.ShapeDtypeStruct((4, models.latent_dim), jnp.float32)
  sample = lambda params, batch_stats, z: train.generate(models, params, batch_stats, z, train=False)[0]
  return {"init": _sha(_lowered_text(init).encode()),
          "iteration": _sha(_lowered_text(iteration, state, real).encode()),
          "sampling": _sha(_lowered_text(sample, state.generator_params, state.generator_batch_stats, z).encode())}


def configs() -> dict:
  """Small unconditional configs of each model family, on lax's convolutions (the same program on every machine)."""
  small = {"model.kernels": "xla", "model.width": 8, "batch_size": 8}
  return {"celeba32": configuration.override(celeba32.get_config(), small),
          "celeba32_gated": configuration.override(celeba32.get_config(), {**small, "model.name": "gated"}),
          "cifar10_resnet": configuration.override(cifar10_resnet.get_config(), small),
          "toy_8gaussians": toy_8gaussians.get_config()}


def fingerprints() -> dict[str, dict[str, str]]:
  return {name: fingerprint(config) for name, config in configs().items()}
