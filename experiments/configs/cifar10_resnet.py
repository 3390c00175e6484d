"""The paper's CIFAR-10 ResNet settings (``gan_cifar_resnet.py``): unsupervised (Inception Score 7.86) and, as the
variant ``conditional``, supervised (AC-GAN: 8.42), for a GPU or TPU.

  python -m experiments.train --config experiments/configs/cifar10_resnet.py --workdir runs/cifar10_resnet \\
      --config.data.data_dir=gs://YOUR_BUCKET/tensorflow_datasets

ResNet generator and critic of 128 channels, Adam(2e-4, b1 0, b2 0.9) for both, n_critic 5, lambda 10, both learning
rates decaying linearly to 0 over 100,000 generator steps, batch 64, TFDS ``cifar10`` (array_record) at 32x32
without crop or flips. One difference from the paper's code: it draws a generator batch twice the critic's (128);
here both are 64.

``cifar10_resnet.py:conditional`` is the authors' default: ``model.num_classes=10`` (the generator's batch norms take
the class's scale and offset, the critic classifies beside scoring; ``models.conditional``), the classifier's
cross-entropy weighted 1 in the critic's loss and 0.1 in the generator's (``acgan_scale``, ``acgan_scale_g``), the
labels read from TFDS's ``cifar10``.
"""

VARIANTS = ("", "conditional")

from experiments.configs import common


def get_config(variant: str = ""):
  if variant not in VARIANTS:
    raise ValueError(f"unknown cifar10_resnet config variant {variant!r}; use '' or 'conditional'")
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
  if variant == "conditional":
    config.model.num_classes = 10
    config.objective.acgan_scale = 1.0
    config.objective.acgan_scale_g = 0.1
  return config
