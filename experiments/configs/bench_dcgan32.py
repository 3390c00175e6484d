"""Benchmark: the DCGAN WGAN-GP step at 32x32, width 32, batch 64 (``python -m experiments.benchmark``)."""

from experiments.configs import common


def get_config():
  config = common.base_config()
  config.kind = "image"
  config.model = "dcgan"
  config.resolution = 32
  config.width = 32
  config.channels = 3
  config.batch_size = 64
  return config
