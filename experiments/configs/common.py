"""Defaults shared by every experiment config; each config file's ``get_config()`` starts here."""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.kind = "toy"  # "toy" (2-D points) or "image"
  config.seed = 0
  config.num_steps = 10_000  # generator iterations
  config.batch_size = 64  # global, split over all devices
  config.num_devices = 0  # 0: all devices
  # Gulrajani et al. (2017): lambda = 10, n_critic = 5, Adam(1e-4, b1 = 0, b2 = 0.9).
  config.n_critic = 5
  config.gp_weight = 10.0
  config.drift_weight = 0.0
  config.optimizer = "adam"  # or "sgd"
  config.learning_rate = 1e-4
  config.b1 = 0.0
  config.b2 = 0.9
  config.linear_decay = False
  # Model.
  config.model = "dcgan"  # "toy_mlp", "dcgan" or "resnet"
  config.width = 64
  config.latent_dim = 128
  config.layer_norm = False
  config.resolution = 64
  config.channels = 3
  config.toy_dataset = ""
  # Logging, pictures and checkpoints, every so many generator steps.
  config.log_every = 100
  config.figure_every = 1000
  config.num_fixed_samples = 64
  config.checkpoint_every = 1000
  config.keep_checkpoints = 3
  return config


def toy_config(dataset: str) -> ml_collections.ConfigDict:
  """The paper's toy setting (``gan_toy.py``: lambda 0.1, Adam b1 0.5, b2 0.9), sized for a laptop CPU.

  The paper trains MLPs of 512 for 100,000 steps at lr 1e-4 and batch 256. Here the
  MLPs have 128 units, the batch is 128 and the learning rate 2e-3 decays linearly
  to 0, so a default run takes a few minutes on 2 CPU cores and still puts most
  samples on the modes. ``--config.width=512 --config.batch_size=256
  --config.learning_rate=1e-4 --config.linear_decay=False --config.num_steps=100000``
  is the paper's run.
  """
  config = base_config()
  config.kind = "toy"
  config.toy_dataset = dataset
  config.model = "toy_mlp"
  config.width = 128
  config.latent_dim = 2
  config.batch_size = 128
  config.gp_weight = 0.1
  config.b1 = 0.5
  config.learning_rate = 2e-3
  config.linear_decay = True
  config.num_steps = 4000
  config.log_every = 250
  config.figure_every = 1000
  config.checkpoint_every = 1000
  config.num_fixed_samples = 1000
  return config


def image_config(*, resolution: int) -> ml_collections.ConfigDict:
  """An image experiment: the paper's DCGAN and hyperparameters; the data keys are read by ``wgan_gp_jax.data``."""
  config = base_config()
  config.kind = "image"
  config.model = "dcgan"
  config.resolution = resolution
  config.channels = 3
  config.dataset = ""  # a TFDS name: celeb_a, mnist, fashion_mnist, cifar10
  config.image_folder = ""  # or a folder / .zip of images, prepared into a TFDS dataset on first use
  config.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data dir; None: TFDS's default
  config.crop = 160 / 178  # CelebA protocol of Lucic et al. (2018); 1.0 for square sources
  config.random_flip = True
  config.figure_every = 500
  config.checkpoint_every = 1000
  return config


def benchmark_config(*, resolution: int, width: int) -> ml_collections.ConfigDict:
  """The DCGAN step that ``experiments.benchmark`` times, batch 64; no data keys (it feeds its own images)."""
  config = base_config()
  config.kind = "image"
  config.model = "dcgan"
  config.resolution = resolution
  config.width = width
  config.channels = 3
  config.batch_size = 64
  return config
