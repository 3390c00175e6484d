"""Plots metrics of runs' ``metrics.jsonl`` against the generator step, e.g. the FID curve measured while training.

  python -m experiments.plot_metrics --workdirs runs/a,runs/b --metric fid_2000 --out fid.png [--floor 5.3] \
      [--evaluated fid]

Each run is a line, labelled by its work directory's name; steps without the metric are skipped. ``--evaluated fid``
adds, per run, the FID of its kept checkpoints scored by ``experiments.evaluate --step S`` (``evaluation_step_S.json``),
one line per number of samples.
"""

import pathlib

from absl import app, flags

from experiments import cli
from wgan_gp_jax.runner import plotting, workdir as workdir_lib

_WORKDIRS = flags.DEFINE_list("workdirs", None, "Work directories of runs.")
_METRIC = flags.DEFINE_string("metric", "fid_2000", "The metric to plot, as named in metrics.jsonl.")
_OUT = flags.DEFINE_string("out", None, "Output .png file.")
_FLOOR = flags.DEFINE_float("floor", None, "A horizontal reference line, e.g. the real-vs-real FID at the same N.")
_EVALUATED = flags.DEFINE_string("evaluated", None, "Also plot this key of the runs' evaluation_step_<S>.json files.")
flags.mark_flags_as_required(["workdirs", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  curves = {}
  for name in _WORKDIRS.value:
    workdir = pathlib.Path(name)
    metrics_path = workdir / workdir_lib.METRICS_FILENAME
    if not metrics_path.is_file():
      cli.fail(f"--workdirs: no {metrics_path.name} in {workdir}")
    steps, values = workdir_lib.metric_curve(workdir, _METRIC.value)
    if not len(steps):
      cli.fail(f"--metric: {metrics_path} has no {_METRIC.value!r}")
    curves[workdir.name] = (steps, values)
    if _EVALUATED.value:
      evaluated = workdir_lib.evaluated_curve(workdir, _EVALUATED.value)
      if not evaluated:
        cli.fail(f"--evaluated: no evaluation_step_<S>.json in {workdir} has {_EVALUATED.value!r}")
      for num_samples, curve in evaluated.items():
        curves[f"{workdir.name}: {_EVALUATED.value} of {num_samples:,} samples (evaluate --step)"] = curve
  plotting.save_curves(_OUT.value, curves, xlabel="generator step", ylabel=_METRIC.value, floor=_FLOOR.value)
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  cli.run(main)
