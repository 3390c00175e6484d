"""CelebA 128x128 (DCGAN, five stride-2 stages) for larger accelerators: the celeba32 recipe that generalises, or
the paper's setting with ``celeba128.py:paper`` (see ``celeba64.py``)."""

from experiments.configs import common


def get_config(variant: str = ""):
  return common.celeba_config(resolution=128, variant=variant)
