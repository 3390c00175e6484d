r"""How steep trained critics are where their penalty looks: the norm of ``grad_x D`` at random interpolates between
training images and generated ones, one norm per example, beside what the tutorial's one norm per batch reads.

  python -m experiments.critic_slopes --workdirs DIR[,DIR...] --out FILE.json [--num 1024 --seed 0]

For each run (its latest checkpoint, or ``--step``): the first ``--num`` images of its training split (its
``data.image_folder`` without the ``data.held_out`` images, preprocessed as for training, unflipped), as many outputs of
its raw generator (the one its critic was trained against, not the EMA; evaluation mode), interpolates with one
``t_i ~ U[0, 1]`` per example (``losses.random_interpolates``) and the per-example norms ``||grad_x D(x_hat_i)||_2``
(``losses.per_example_norm`` of ``losses.input_gradients``). The paper's penalty constrains each of these norms to
1. The tutorial's penalty constrains one norm per batch, ``sqrt(sum_i ||grad_x D(x_hat_i)||^2)`` over the run's
``batch_size`` examples, which a critic meets with each norm near ``1 / sqrt(batch_size)`` on average, and with any
spread of them. Every random number comes from ``--seed``: a rerun gives the same figures.

Writes ``FILE.json`` (the command, commit, CPU and date; per work directory: its objective, step and batch size; the per-example norms' mean, standard
deviation, root mean square, 10th/50th/90th percentiles, minimum and maximum; the whole-batch norms of consecutive
batches of its batch size; and both penalties' values, without the weight) and ``FILE.png`` (histograms of the
per-example norms, log scale, with lines at 1 and at ``1 / sqrt(batch_size)``).
"""

import functools
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from absl import app, flags

from experiments import cli, subruns
from wgan_gp_jax import losses
from wgan_gp_jax.metrics import reference, slopes
from wgan_gp_jax.runner import host

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402

_WORKDIRS = flags.DEFINE_list("workdirs", None, "Work directories of image runs trained on an image folder.")
_OUT = flags.DEFINE_string("out", None, "Output .json file; the figure goes beside it as .png.")
_NUM = flags.DEFINE_integer("num", 1024, "Interpolates per run.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the latents and of the interpolation weights.")
_STEP = flags.DEFINE_integer("step", None, "Load each run's kept checkpoint at this generator step (default: latest).")
flags.mark_flags_as_required(["workdirs", "out"])

_CHUNK = 256


@functools.partial(jax.jit, static_argnums=0)
def _input_gradient_norms(models, critic_params, x: jax.Array) -> jax.Array:
  def critic_fn(inputs):
    scores = models.critic.apply({"params": critic_params}, inputs)
    return scores[:, 0] if models.num_classes else scores  # a conditional critic's first output is its score
  return losses.per_example_norm(losses.input_gradients(critic_fn, x))


def _training_images(config, num: int) -> np.ndarray:
  folder = config.data.get("image_folder")
  if not folder:
    cli.fail("this command needs runs trained on an image folder (data.image_folder); this one reads"
             f" data.dataset={config.data.get('dataset')!r}")
  images = reference.load_reference_images(folder, resolution=config.data.resolution, crop=config.data.crop,
                                           channels=config.data.channels)
  training = images[:len(images) - config.data.held_out]
  if len(training) < num:
    cli.fail(f"--num={num}: {folder} has {len(training)} training images")
  return training[:num].astype(np.float32) / 127.5 - 1.0


def measure(workdir: str, *, num: int, seed: int, step: int | None) -> dict:
  """``metrics.slopes.slope_statistics`` of the run in ``workdir`` at ``num`` interpolates, with its objective and step."""
  run = cli.load_run(workdir, use_ema=False, step=step)
  if run.config.kind != "image":
    cli.fail(f"{workdir}: a {run.config.kind} run; this command measures image runs")
  real = _training_images(run.config, num)
  fake = run.generate(run.latents(num, seed))
  key = jax.random.fold_in(jax.random.key(seed), 1)
  interpolates = losses.random_interpolates(jnp.asarray(real), jnp.asarray(fake, jnp.float32), key)
  norms = np.concatenate([np.asarray(_input_gradient_norms(run.models, run.state.critic_params,
                                                           interpolates[i:i + _CHUNK]))
                          for i in range(0, num, _CHUNK)])
  batch_size = min(run.config.batch_size, num)
  return {"workdir": workdir, "objective": run.config.objective.name, "step": int(run.state.step),
          **slopes.slope_statistics(norms, batch_size=batch_size), "norms": norms.tolist()}


def _figure(results: list[dict], path: pathlib.Path) -> None:
  figure, axis = plt.subplots(figsize=(7, 3.6))
  all_norms = np.concatenate([result["norms"] for result in results])
  low, high = max(all_norms.min(), 1e-4), max(all_norms.max(), 1.5)
  bins = np.geomspace(low, high, 60)
  for result in results:
    label = f"{result['objective']} ({pathlib.Path(result['workdir']).name}, step {result['step']})"
    axis.hist(result["norms"], bins=bins, histtype="step", linewidth=1.5, label=label)
  batch_sizes = sorted({result["batch_size"] for result in results})
  axis.axvline(1.0, color="black", linestyle="--", linewidth=1)
  for batch_size in batch_sizes:
    axis.axvline(batch_size ** -0.5, color="grey", linestyle=":", linewidth=1)
  axis.set_xscale("log")
  axis.set_xlabel("||grad_x D(x_hat_i)||  (dashed: 1; dotted: 1/sqrt(batch size))")
  axis.set_ylabel("interpolates")
  axis.legend(fontsize=7)
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  plt.close(figure)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  out = pathlib.Path(_OUT.value)
  if out.suffix != ".json":
    raise app.UsageError(f"--out must end in .json, got {out}")
  results = [measure(workdir, num=_NUM.value, seed=_SEED.value, step=_STEP.value) for workdir in _WORKDIRS.value]
  out.parent.mkdir(parents=True, exist_ok=True)
  _figure(results, out.with_suffix(".png"))
  summary = [{key: value for key, value in result.items() if key != "norms"} for result in results]
  provenance = {"command": "python -m experiments.critic_slopes " + " ".join(sys.argv[1:]),
                "commit": subruns.git_commit(), "cpu": host.cpu_model(), "date": time.strftime("%Y-%m-%d")}
  out.write_text(json.dumps({**provenance, "num": _NUM.value, "seed": _SEED.value, "runs": summary}, indent=2) + "\n")
  for result in summary:
    stats = result["per_example"]
    print(f"{result['workdir']}: {result['objective']} step {result['step']}: per-example norm mean"
          f" {stats['mean']:.3f} sd {stats['std']:.3f} (p10 {stats['p10']:.3f}, p90 {stats['p90']:.3f}); whole-batch"
          f" norm (batch {result['batch_size']}) mean {np.mean(result['whole_batch_norms']):.3f}")
  print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
