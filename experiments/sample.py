"""Draws samples from the latest checkpoint of a run.

  python -m experiments.sample --workdir DIR --num N --seed S --out FILE.npz

writes array ``samples``: float32 ``(N, 2)`` for toy runs, uint8 ``(N, H, W, C)``
for image runs. An ``--out`` ending in ``.png`` writes a picture instead (a
scatter plot for toy runs, a grid for image runs).
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
flags.mark_flags_as_required(["workdir", "out"])

_RUN = cli.RunFlags()

def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  out = pathlib.Path(_OUT.value)
  if out.suffix not in (".npz", ".png"):
    raise app.UsageError(f"--out must end in .npz or .png, got {out}")
  run = _RUN.load(_WORKDIR.value)
  samples = run.sample(_NUM.value, _SEED.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  if out.suffix == ".npz":
    np.savez(out, samples=samples)
  elif run.config.kind == "toy":
    plotting.save_scatter(out, samples)
  else:
    plotting.save_image_grid(out, samples)
  print(f"wrote {samples.shape[0]} samples to {out}")


if __name__ == "__main__":
  cli.run(main)
