"""CelebA 64x64 for a GPU or TPU: the celeba32 recipe that generalises, or the paper's DCGAN setting.

  python -m experiments.train --config experiments/configs/celeba64.py --workdir runs/celeba64 \\
      --config.data.data_dir=gs://YOUR_BUCKET/tensorflow_datasets
  python -m experiments.train --config experiments/configs/celeba64.py:paper --workdir runs/celeba64_paper ...

Default: DCGAN width 64, batch 64, WGAN-GP (lambda 10) with two critic steps per generator step at twice the
generator's learning rate (Adam 4e-4 / 2e-4, b1 0, b2 0.9), the generator EMA and bfloat16 activations: what beat
the paper's setting at equal wall time on celeba32 (docs/faces.md). ``:paper`` is Gulrajani et al. (2017)'s:
n_critic 5, Adam(1e-4, 0, 0.9), float32, no EMA (the TF2 tutorial's scale).
"""

from experiments.configs import common


def get_config(variant: str = ""):
  return common.celeba_config(resolution=64, variant=variant)
