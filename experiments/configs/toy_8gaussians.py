"""The paper's toy experiment on the 8gaussians distribution (Figure 1)."""

from experiments.configs import common


def get_config():
  return common.toy_config("8gaussians")
