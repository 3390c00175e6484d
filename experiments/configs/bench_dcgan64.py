"""Benchmark: the DCGAN WGAN-GP step at 64x64, width 64, batch 64 (``python -m experiments.benchmark``)."""

from experiments.configs import common


def get_config():
  return common.benchmark_config(resolution=64, width=64)
