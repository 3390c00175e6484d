"""The paper's CIFAR-10 ResNet setting (``gan_cifar_resnet.py``, unsupervised; Inception Score 7.86), for a GPU or TPU.

  python -m experiments.train --config experiments/configs/cifar10_resnet.py --workdir runs/cifar10_resnet \\
      --config.data.data_dir=gs://YOUR_BUCKET/tensorflow_datasets

ResNet generator and critic of 128 channels, Adam(2e-4, b1 0, b2 0.9) for both, n_critic 5, lambda 10, both learning
rates decaying linearly to 0 over 100,000 generator steps, batch 64, TFDS ``cifar10`` (array_record) at 32x32
without crop or flips. One difference from the paper's code: it draws a generator batch twice the critic's (128);
here both are 64.
"""

from experiments.configs import common


def get_config():
  config = common.image_config(resolution=32)
  config.data.dataset = "cifar10"
  config.data.crop = 1.0
  config.data.random_flip = False
  config.model.name = "resnet"
  config.model.width = 128
  config.batch_size = 64
  config.num_steps = 100_000
  for optimizer in (config.critic, config.generator):
    optimizer.learning_rate = 2e-4
    optimizer.linear_decay = True
  config.checkpoint.every = 5000
  config.logging.figure_every = 5000
  return config
