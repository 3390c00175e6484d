"""MNIST digits, unconditional or class-conditional (the paper's AC-GAN setting), on a CPU.

  python -m experiments.train --config experiments/configs/mnist.py:conditional --workdir runs/mnist_conditional

The default is the authors' ``gan_mnist.py`` setting: DIM 64, batch 50, n_critic 5, Adam(1e-4, 0.5, 0.9), lambda 10.
Their networks work at 28x28; ours are the DCGAN at 32x32 (the digits resized from 28). It reads the shared MNIST
test set (``../shared/data/mnist_t10k``, IDX files, ``data.idx_folder``) less its last 3,000 digits
(``data.held_out``: ``experiments.evaluate`` fits a classifier on them that did not train the GAN);
``--config.data.idx_folder='' --config.data.dataset=mnist`` reads TFDS's MNIST (prepared as array_record) instead.
Digits are never mirrored.

``conditional``: ``model.num_classes=10`` (``models.conditional``), the AC-GAN terms at ``acgan_scale`` 1 (the
authors') and ``acgan_scale_g`` 1 (the authors' 0.1 pushes the generator towards the asked class more slowly), sized
for 10 minutes of training on 2 CPU cores with the ``celeba32`` recipe's networks and optimizers (width 32, bfloat16,
batch 64, n_critic 2, Adam(8e-4 / 4e-4, 0, 0.9), generator EMA): 1,500 generator steps (docs/conditional.md has the
measurement).
"""

from experiments.configs import common

VARIANTS = ("", "conditional")


def get_config(variant: str = ""):
  if variant not in VARIANTS:
    raise ValueError(f"unknown mnist config variant {variant!r}; use '' or 'conditional' (mnist.py:conditional)")
  config = common.image_config(resolution=32)
  config.data.idx_folder = "../shared/data/mnist_t10k"
  config.data.channels = 1
  config.data.crop = 1.0
  config.data.random_flip = False
  config.data.held_out = 3000  # the last 3,000 digits: never trained on; evaluate's independent classifier's
  config.model.width = 64
  config.batch_size = 50
  config.n_critic = 5
  for optimizer in (config.critic, config.generator):
    optimizer.learning_rate = 1e-4
    optimizer.b1 = 0.5
    optimizer.b2 = 0.9
  config.num_steps = 2000  # the authors' setting, not sized for a CPU budget (the conditional variant is)
  config.logging.log_every = 100
  config.logging.figure_every = 500
  config.checkpoint.every = 500
  if variant == "conditional":  # sized for 10 minutes on 2 CPU cores: the celeba32 recipe's networks and optimizers
    config.model.num_classes = 10
    config.objective.acgan_scale_g = 1.0  # the authors' 0.1: slower towards the asked class, for this short budget
    config.model.width = 32
    config.model.dtype = "bfloat16"
    config.batch_size = 64
    config.n_critic = 2
    config.critic.learning_rate, config.generator.learning_rate = 8e-4, 4e-4
    for optimizer in (config.critic, config.generator):
      optimizer.b1 = 0.0
    config.ema.enabled = True
    config.num_steps = 1500
  return config
