"""CelebA 128x128 (DCGAN, five stride-2 stages) for larger accelerators."""

from experiments.configs import common


def get_config():
  config = common.image_config(resolution=128)
  config.data.dataset = "celeb_a"
  config.model.width = 64
  config.batch_size = 64
  config.num_steps = 100_000
  return config
