"""CelebA faces at 32x32 on a CPU: learns recognisable faces from the 10,000 shared faces in under 45 minutes.

  python -m experiments.train --config experiments/configs/celeba32.py --workdir runs/celeba32

Defaults read ``../shared/data/celeba_10k/images`` (the project's copy beside the checkout); point
``--config.image_folder`` at any folder or zip of face images, or set ``--config.image_folder=''
--config.dataset=celeb_a`` to read TFDS's CelebA.
"""

from experiments.configs import common


def get_config():
  config = common.image_config(resolution=32)
  config.image_folder = "../shared/data/celeba_10k/images"
  config.width = 32
  config.batch_size = 64
  config.num_steps = 2000
  config.figure_every = 250
  config.checkpoint_every = 250
  return config
