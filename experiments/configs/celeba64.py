"""CelebA 64x64 at the paper's and the TF tutorial's scale (DCGAN, batch 64, n_critic 5), for a GPU or TPU.

  python -m experiments.train --config experiments/configs/celeba64.py --workdir runs/celeba64 \\
      --config.data.data_dir=gs://YOUR_BUCKET/tensorflow_datasets
"""

from experiments.configs import common


def get_config():
  config = common.image_config(resolution=64)
  config.data.dataset = "celeb_a"
  config.model.width = 64
  config.batch_size = 64
  config.num_steps = 100_000
  return config
