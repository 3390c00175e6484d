"""CelebA faces at 32x32 on a CPU: the recipe that gave the lowest FID in 45 minutes on 2 cores (docs/faces.md).

  python -m experiments.train --config experiments/configs/celeba32.py --workdir runs/celeba32

The WGAN-GP objective (lambda 10) with what the measurements of issue 11 kept: two critic steps per generator step
with the critic's learning rate twice the generator's (TTUR), the paper's Adam betas (0, 0.9), the generator EMA, and
bfloat16 activations (float32 parameters, optimizer states, EMA and penalty). Every ingredient is one key, so the
paper's setting is ``--config.n_critic=5 --config.critic.learning_rate=1e-4 --config.generator.learning_rate=1e-4
--config.model.dtype=float32 --config.ema.enabled=False``.

``celeba32.py:tutorial`` is the setting of the tutorial comparison (weight clipping against the penalties,
docs/tutorial_comparison.md).

``num_steps`` was sized for 45 minutes of training on the slower of this project's 2-core machines (docs/faces.md has
the measurements). FID-2k is measured first at a third of the run, then at the steps the run plans within a 15% time
bound, and at its end; the checkpoints at each third are kept for FID-10k.

Defaults read ``../shared/data/celeba_10k/images`` (the project's copy beside the checkout) and train on its first
9,000 faces (by file name): the last 1,000 are held out (``data.held_out``), so that ``experiments.evaluate`` scores
samples against faces training never saw and checks for memorised ones (docs/evaluation.md). Point
``--config.data.image_folder`` at any folder or zip of face images, or set ``--config.data.image_folder=''
--config.data.dataset=celeb_a`` to read TFDS's CelebA.
"""

from experiments.configs import common


def get_config(variant: str = ""):
  """``variant`` "" is the recipe; "tutorial" is the setting of the tutorial comparison (docs/tutorial_comparison.md)
  and of the default before 2026-11-30 (n_critic 5, Adam(2e-4, 0.5, 0.9) for both networks, float32, no EMA, 2,000
  steps)."""
  if variant not in ("", "tutorial"):
    raise ValueError(f"unknown celeba32 config variant {variant!r}; use '' or 'tutorial' (celeba32.py:tutorial)")
  config = common.image_config(resolution=32)
  config.data.image_folder = "../shared/data/celeba_10k/images"
  config.data.held_out = 1000  # trains on 9,000 faces; evaluate scores against the 1,000 it never saw too
  config.model.width = 32
  config.model.dtype = "bfloat16"
  config.batch_size = 64
  config.n_critic = 2
  config.critic.learning_rate = 8e-4
  config.generator.learning_rate = 4e-4
  config.ema.enabled = True
  config.num_steps = 8400
  config.evaluation.every = config.num_steps // 3
  config.checkpoint.keep_period = config.num_steps // 3
  config.checkpoint.every = 700  # keep_period must be a multiple of it
  config.logging.figure_every = 1000
  if variant == "tutorial":
    config.n_critic = 5
    config.critic.learning_rate = config.generator.learning_rate = 2e-4
    for optimizer in (config.critic, config.generator):
      optimizer.b1 = 0.5
    config.model.dtype = "float32"
    config.ema.enabled = False
    config.num_steps = 2000
    config.evaluation.every = config.checkpoint.keep_period = 0
    config.checkpoint.every = config.logging.figure_every = 250
  return config
