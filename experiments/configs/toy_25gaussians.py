"""The paper's toy experiment on the 25gaussians distribution (Figure 1)."""

from experiments.configs import common


def get_config():
  config = common.toy_config("25gaussians")
  config.num_steps = 8000  # 25 modes need twice the steps of 8 to put 80% of samples on them
  return config
