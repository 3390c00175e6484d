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
  """The paper's toy setting (``gan_toy.py``): MLPs of 512, batch 256, lambda 0.1, Adam(1e-4, 0.5, 0.9)."""
  config = base_config()
  config.kind = "toy"
  config.toy_dataset = dataset
  config.model = "toy_mlp"
  config.width = 512
  config.latent_dim = 2
  config.batch_size = 256
  config.gp_weight = 0.1
  config.b1 = 0.5
  config.num_fixed_samples = 1000
  return config
