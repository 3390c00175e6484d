"""Trains a WGAN-GP experiment.

  python -m experiments.train --config experiments/configs/toy_8gaussians.py --workdir runs/8g \
      [--config.num_steps=2000 ...]

Starting again on a work directory with checkpoints resumes from the latest one.
"""

from absl import app, flags
from ml_collections import config_flags

from wgan_gp_jax import experiment, logs

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and pictures.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logs.setup()
  experiment.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
