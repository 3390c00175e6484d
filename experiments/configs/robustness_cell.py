"""One cell of the WGAN-GP paper's robustness experiment (section 5.2, Figure 2): an architecture trained with an
objective and that objective's hyperparameters (``objectives.ROBUSTNESS_SETTINGS``). ``experiments.architecture_grid``
trains every cell with ``cell_config``; one cell trains alone as

  python -m experiments.train --config experiments/configs/robustness_cell.py:gated,wgan_gp --workdir runs/gated_gp

The variant ``ARCHITECTURE,OBJECTIVE`` (default ``dcgan,wgan_gp``) is the grid's 32x32 CPU cell on the shared faces
(``../shared/data/celeba_10k/images``, as ``celeba32.py``), ``CPU_STEPS`` generator steps. The architectures are
``models.paper_architectures.ARCHITECTURES``; the objectives ``OBJECTIVES``.
"""

import ml_collections

from experiments.configs import common
from wgan_gp_jax import configuration, objectives
from wgan_gp_jax.models import paper_architectures

OBJECTIVES = ("ns", "lsgan", "wgan_clip", "wgan_gp")  # the columns of the paper's Figure 2, in its order
CPU_RESOLUTION = 32
# Generator steps per cell on 2 CPU cores: the 28 cells' iterations take about 10 s per generator step together (AMD
# EPYC, 2026-12-07: 4 to 100 ms for ns and lsgan, 0.2 to 1.7 s for WGAN-GP, resnet101 the slowest), so 500 steps
# train in about 85 minutes, and with FID-2k of every cell (about 2 minutes each at 17 images/s) the grid takes
# about 3 hours.
CPU_STEPS = 500
# Model widths by resolution (default: 32 at 32 pixels and below, 64 above, the paper's DIM at 64x64); the 101-layer
# ResNet is narrower on a CPU.
WIDTHS = {32: {"resnet101": 16}}
SHARED_FACES = "../shared/data/celeba_10k/images"


def cell_width(architecture: str, resolution: int, width: int | None = None) -> int:
  """``width`` where given, else ``WIDTHS``' for the architecture at ``resolution``, else 32 at 32 pixels and below
  and 64 above."""
  if width is not None:
    return width
  return WIDTHS.get(resolution, {}).get(architecture, 32 if resolution <= 32 else 64)


def grid_critic_norm(architecture: str, objective: str) -> str:
  """The paper's critic normalisation of a cell: none in ``no_norm``, else ``paper_architectures.paper_critic_norm``
  of the objective (layer norm with a gradient penalty, batch norm otherwise). Named for every cell, ``dcgan``
  included (whose ``model.critic_norm="auto"`` is the critic it had before the robustness experiment)."""
  if architecture == "no_norm":
    return "none"
  objective_group = configuration.default_config("image").objective
  allows = objectives.OBJECTIVES[objective](objective_group).allows_critic_batch_norm
  return paper_architectures.paper_critic_norm(allows_batch_norm=allows)


def cell_config(architecture: str, objective: str, *, resolution: int, steps: int, width: int, batch_size: int = 64,
                seed: int = 0, image_folder: str = "", dataset: str = "",
                data_dir: str | None = None) -> ml_collections.ConfigDict:
  """The config of one cell: the paper's DCGAN setting (``common.image_config``: 128-dimensional latents, float32, no
  EMA, no augmentation) with the architecture, the objective and its ``objectives.ROBUSTNESS_SETTINGS``, the
  paper's critic normalisation (``grid_critic_norm``), no FID while training, one picture at the end and a checkpoint
  every quarter of the run (at most every 1,000 steps). The data are ``image_folder``, or the TFDS ``dataset`` where
  one is named. Raises ``configuration.ConfigError`` for a config that cannot make a run."""
  config = common.image_config(resolution=resolution)
  config.seed = seed
  config.num_steps = steps
  config.batch_size = batch_size
  config.model.name = architecture
  config.model.width = width
  config.model.critic_norm = grid_critic_norm(architecture, objective)
  config.objective.name = objective
  config.data.image_folder = "" if dataset else image_folder
  config.data.dataset = dataset
  config.data.data_dir = data_dir
  config.evaluation.every = 0
  config.logging.log_every = min(100, steps)
  config.logging.figure_every = steps
  config.checkpoint.every = max(1, min(1000, steps // 4))
  config = configuration.override(config, objectives.ROBUSTNESS_SETTINGS[objective])
  configuration.validate(config)
  return config


def get_config(variant: str = "dcgan,wgan_gp") -> ml_collections.ConfigDict:
  """The 32x32 CPU cell ``ARCHITECTURE,OBJECTIVE`` on the shared faces."""
  architecture, _, objective = variant.partition(",")
  if architecture not in paper_architectures.ARCHITECTURES or objective not in OBJECTIVES:
    raise ValueError(f"robustness_cell.py:{variant}: use ARCHITECTURE,OBJECTIVE with an architecture among"
                     f" {paper_architectures.ARCHITECTURES} and an objective among {OBJECTIVES}")
  return cell_config(architecture, objective, resolution=CPU_RESOLUTION, steps=CPU_STEPS,
                     width=cell_width(architecture, CPU_RESOLUTION), image_folder=SHARED_FACES)
