"""Benchmark: the DCGAN WGAN-GP step at 32x32, width 32, batch 64 (``python -m experiments.benchmark``)."""

from experiments.configs import common


def get_config():
  return common.benchmark_config(resolution=32, width=32)
