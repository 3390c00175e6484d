"""Latent interpolations between generated faces: a strip PNG and an animated GIF.

  python -m experiments.interpolate --workdir DIR --seed S --out FILE.png

writes FILE.png (one row per pair of faces, ``--steps`` columns from one face to the
next) and FILE.gif (a loop through all the faces). Latents are interpolated
spherically, which keeps them at the typical norm of a Gaussian sample
(White, "Sampling Generative Networks", 2016).
"""

import pathlib

import jax.numpy as jnp
from absl import app, flags
from PIL import Image

from experiments import cli
from wgan_gp_jax.runner import experiment, plotting

_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory of an image run.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the faces' latents.")
_OUT = flags.DEFINE_string("out", None, "Output .png; the GIF is written beside it with the suffix .gif.")
_FACES = flags.DEFINE_integer("faces", 5, "Number of faces to pass through.", lower_bound=2)
_STEPS = flags.DEFINE_integer("steps", 8, "Pictures from one face to the next, both ends included.", lower_bound=2)
_SCALE = flags.DEFINE_integer("scale", 0, "Upscaling of the pictures (0: to about 128 pixels).", lower_bound=0)
flags.mark_flags_as_required(["workdir", "out"])

_LABEL = flags.DEFINE_integer("label", 0, "A class-conditional run's class, the same along every path.", lower_bound=0)
_RUN = cli.RunFlags()

def slerp(a: jnp.ndarray, b: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
  """Spherical interpolation between latents ``a`` and ``b`` (shape ``(D,)``) at fractions ``t`` (shape ``(T,)``)."""
  cos = jnp.dot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b))
  omega = jnp.arccos(jnp.clip(cos, -1.0, 1.0))
  t = t[:, None]
  if float(jnp.sin(omega)) < 1e-6:  # (anti)parallel: the straight line is as good
    return (1 - t) * a + t * b
  return (jnp.sin((1 - t) * omega) * a + jnp.sin(t * omega) * b) / jnp.sin(omega)


def interpolation_latents(endpoints: jnp.ndarray, steps: int) -> jnp.ndarray:
  """``(pairs, steps, D)``: each row goes from one endpoint to the next, the last back to the first."""
  fractions = jnp.linspace(0.0, 1.0, steps)
  following = jnp.roll(endpoints, -1, axis=0)
  return jnp.stack([slerp(a, b, fractions) for a, b in zip(endpoints, following)])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  out = pathlib.Path(_OUT.value)
  if out.suffix != ".png":
    raise app.UsageError(f"--out must end in .png (the GIF goes beside it), got {out}")
  run = _RUN.load(_WORKDIR.value)
  if run.config.kind != "image":
    raise app.UsageError(f"{_WORKDIR.value} is a {run.config.kind} run; interpolation needs an image run")
  if run.num_classes and not 0 <= _LABEL.value < run.num_classes:
    cli.fail(f"--label={_LABEL.value}: this run's classes are 0 to {run.num_classes - 1}")
  latents = interpolation_latents(run.latents(_FACES.value, _SEED.value), _STEPS.value)
  pairs, steps, dim = latents.shape
  frames = experiment.to_uint8(run.generate(latents.reshape(pairs * steps, dim),
                                            run.labels(pairs * steps, _LABEL.value if run.num_classes else None)))
  scale = _SCALE.value or max(1, 128 // run.config.data.resolution)
  out.parent.mkdir(parents=True, exist_ok=True)
  plotting.save_image_grid(out, frames, columns=steps, scale=scale)
  # The GIF loops through the faces: drop each row's last frame, the next row's first.
  loop = frames.reshape(pairs, steps, *frames.shape[1:])[:, :-1].reshape(-1, *frames.shape[1:])
  pictures = [Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f) for f in loop]
  pictures = [p.resize((p.width * scale, p.height * scale), Image.NEAREST) for p in pictures]
  gif = out.with_suffix(".gif")
  pictures[0].save(gif, save_all=True, append_images=pictures[1:], duration=120, loop=0)
  print(f"wrote {out} and {gif}")


if __name__ == "__main__":
  cli.run(main)
