"""Draws samples from the latest checkpoint of a run (or ``--best``, or a kept ``--step``).

  python -m experiments.sample --workdir DIR --num N --seed S --out FILE.npz [--label K]

writes array ``samples``: float32 ``(N, 2)`` for toy runs, uint8 ``(N, H, W, C)``
for image runs. An ``--out`` ending in ``.png`` writes a picture instead (a
scatter plot for toy runs, a grid for image runs). A class-conditional run's samples are of class ``--label``, else
of its classes in turn (the ``.npz`` holds their ``labels`` too); its picture without ``--label`` is a grid with one
row per class (``--num`` rounded up to whole rows).
"""

import pathlib

import numpy as np
from absl import app, flags

from experiments import cli
from wgan_gp_jax.runner import plotting

_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory of a run.")
_NUM = flags.DEFINE_integer("num", 64, "Number of samples.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the latent batch.")
_OUT = flags.DEFINE_string("out", None, "Output .npz or .png file.")
_LABEL = flags.DEFINE_integer("label", None, "A class-conditional run's class to sample (default: every class).",
                              lower_bound=0)
flags.mark_flags_as_required(["workdir", "out"])

_RUN = cli.RunFlags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  out = pathlib.Path(_OUT.value)
  if out.suffix not in (".npz", ".png"):
    raise app.UsageError(f"--out must end in .npz or .png, got {out}")
  run = _RUN.load(_WORKDIR.value)
  if _LABEL.value is not None and not 0 <= _LABEL.value < max(run.num_classes, 1):
    cli.fail(f"--label={_LABEL.value}: " + (f"this run's classes are 0 to {run.num_classes - 1}" if run.num_classes
                                             else "this run is not class-conditional (model.num_classes=0)"))
  num, rows = _NUM.value, None
  if run.num_classes and _LABEL.value is None and out.suffix == ".png":  # one row per class
    per_class = -(-num // run.num_classes)
    num, rows = per_class * run.num_classes, per_class
  samples = run.sample(num, _SEED.value, label=_LABEL.value)
  labels = run.labels(num, _LABEL.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  if out.suffix == ".npz":
    np.savez(out, samples=samples, **({} if labels is None else {"labels": labels}))
  elif run.config.kind == "toy":
    plotting.save_scatter(out, samples)
  elif rows is not None:
    order = np.argsort(labels, kind="stable")  # the classes in turn -> each class's samples together, a row each
    plotting.save_image_grid(out, samples[order], columns=rows)
  else:
    plotting.save_image_grid(out, samples)
  print(f"wrote {samples.shape[0]} samples to {out}")


if __name__ == "__main__":
  cli.run(main)
