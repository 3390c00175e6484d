"""Benchmark: the DCGAN WGAN-GP step at 64x64, width 64, batch 64 (``python -m experiments.benchmark``)."""

from experiments.configs import common


def get_config():
  config = common.base_config()
  config.kind = "image"
  config.model = "dcgan"
  config.resolution = 64
  config.width = 64
  config.channels = 3
  config.batch_size = 64
  return config
