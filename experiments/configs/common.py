"""Defaults shared by every experiment config; each config file's ``get_config()`` starts here.

The keys and their groups are listed, with their defaults, in ``wgan_gp_jax.configuration``.
"""

import ml_collections

from wgan_gp_jax import configuration


def toy_config(dataset: str) -> ml_collections.ConfigDict:
  """The paper's toy setting (``gan_toy.py``: lambda 0.1, Adam b1 0.5, b2 0.9), sized for a laptop CPU.

  The paper trains MLPs of 512 for 100,000 steps at lr 1e-4 and batch 256. Here the
  MLPs have 128 units, the batch is 128 and the learning rate 2e-3 decays linearly
  to 0, so a default run takes a few minutes on 2 CPU cores and still puts most
  samples on the modes. ``--config.model.width=512 --config.batch_size=256
  --config.critic.learning_rate=1e-4 --config.generator.learning_rate=1e-4 --config.critic.linear_decay=False
  --config.generator.linear_decay=False --config.num_steps=100000`` is the paper's run.
  """
  config = configuration.default_config("toy")
  config.data.toy_dataset = dataset
  config.model.width = 128
  config.model.latent_dim = 2
  config.batch_size = 128
  config.objective.gp_weight = 0.1
  for optimizer in (config.critic, config.generator):
    optimizer.learning_rate = 2e-3
    optimizer.b1 = 0.5
    optimizer.linear_decay = True
  config.num_steps = 4000
  config.logging.log_every = 250
  config.logging.figure_every = 1000
  config.logging.num_fixed_samples = 1000
  config.checkpoint.every = 1000
  return config


def image_config(*, resolution: int) -> ml_collections.ConfigDict:
  """An image experiment: the paper's DCGAN and hyperparameters; the data keys are read by ``wgan_gp_jax.data``."""
  config = configuration.default_config("image")
  config.data.resolution = resolution
  config.logging.figure_every = 500
  config.checkpoint.every = 1000
  return config


def benchmark_config(*, resolution: int, width: int) -> ml_collections.ConfigDict:
  """The DCGAN step that ``experiments.benchmark`` times, batch 64; no data keys (it feeds its own images)."""
  config = configuration.default_config("image")
  config.model.width = width
  config.data.resolution = resolution
  config.batch_size = 64
  return config


CELEBA_VARIANTS = ("", "paper")


def celeba_config(*, resolution: int, variant: str = "") -> ml_collections.ConfigDict:
  """TFDS ``celeb_a`` at ``resolution`` for accelerators: DCGAN width 64, batch 64, 100,000 generator steps.

  ``variant`` "" is the recipe the celeba32 measurements kept (n_critic 2, Adam 4e-4 / 2e-4 with betas (0, 0.9), the
  generator EMA, bfloat16 activations); "paper" is the paper's (n_critic 5, Adam(1e-4, 0, 0.9), float32, no EMA).
  """
  if variant not in CELEBA_VARIANTS:
    raise ValueError(f"unknown celeba config variant {variant!r}; use one of {CELEBA_VARIANTS} (e.g. celeba64.py:paper)")
  config = image_config(resolution=resolution)
  config.data.dataset = "celeb_a"
  config.model.width = 64
  config.batch_size = 64
  config.num_steps = 100_000
  config.checkpoint.keep_period = 25_000
  if variant == "paper":
    return config
  config.n_critic = 2
  config.critic.learning_rate = 4e-4
  config.generator.learning_rate = 2e-4
  config.ema.enabled = True
  config.model.dtype = "bfloat16"
  return config
