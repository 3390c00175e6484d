"""The candidates of the ``celeba32`` recipe search (docs/faces.md), each at the recipe's training time.

  python -m experiments.compare --config experiments/configs/celeba32.py \
      --variants experiments/configs/celeba32_candidates.py --workdir runs/candidates --num_samples 10000

Each variant is ``celeba32.py`` with a few keys changed. The budget is the time 8,400 of the default's generator steps
take, so a candidate whose iteration costs ``r`` times the default's trains ``8,400 / r`` steps (``STEP_TIME_RATIOS``,
measured alone, one after the other in one run of ``experiments.benchmark``; record
docs/results/celeba32_candidate_step_times.json); as the budget is then a step count, the runs may share a CPU.
"""

from experiments.configs import celeba32

DEFAULT_STEPS = celeba32.get_config().num_steps
# Seconds per generator iteration over the default's: the 10th percentiles of two passes of experiments.benchmark (AMD
# EPYC family 25 model 17, 2 cores, 2026-12-07). The learning-rate schedules and EMA half-lives change no cost (the
# same program up to a scalar): those variants train the default's 8,400 steps.
STEP_TIME_RATIOS = {
    "translation": 1.064,
    "color_translation": 1.041,
    "color_translation_cutout": 1.079,
    "n_critic1": 0.617,
    "width48": 1.746,
    "batch32": 0.506,
    "batch128": 2.041,
    "resnet32": 5.347,
    "resnet64": 11.773,
}


def at_steps(num_steps: int) -> dict:
  """A run of ``num_steps`` generator steps (a multiple of 12) with the default's schedule of evaluations and kept
  checkpoints: FID-2k and a kept checkpoint at each third, a checkpoint every twelfth."""
  if num_steps % 12:
    raise ValueError(f"num_steps must be a multiple of 12, got {num_steps}")
  return {"num_steps": num_steps, "evaluation.every": num_steps // 3, "checkpoint.keep_period": num_steps // 3,
          "checkpoint.every": num_steps // 12}


def equal_time(candidate: str) -> dict:
  """The steps ``candidate`` trains in the default's time, a multiple of 84 (``at_steps``)."""
  return at_steps(84 * round(DEFAULT_STEPS / STEP_TIME_RATIOS[candidate] / 84))


def _both(**keys) -> dict:
  return {f"{network}.{key}": value for network in ("critic", "generator") for key, value in keys.items()}


def get_variants() -> dict[str, dict]:
  return {
      "decay_last_third": _both(linear_decay=True, decay_start=2 / 3),
      "translation": {"augment.policy": "translation", **equal_time("translation")},
      "n_critic1": {"n_critic": 1, **equal_time("n_critic1")},
      "color_translation": {"augment.policy": "color,translation", **equal_time("color_translation")},
      "width48": {"model.width": 48, **equal_time("width48")},
      "ema_20kimg": {"ema.half_life_kimg": 20.0},
      "ema_5kimg": {"ema.half_life_kimg": 5.0},
      "batch128": {"batch_size": 128, **equal_time("batch128")},
      "batch32": {"batch_size": 32, **equal_time("batch32")},
      # The paper's CIFAR-10 ResNet is 128 wide; at 64 it costs 12 times the DCGAN's step (700 steps in the budget).
      "resnet32": {"model.name": "resnet", "model.width": 32, **equal_time("resnet32")},
      "color_translation_cutout": {"augment.policy": "color,translation,cutout",
                                   **equal_time("color_translation_cutout")},
  }
