"""Every image metric of one generated set against one real set, and the cheap metric for training.

:func:`evaluate_images` computes any of ``fid``, ``kid``, ``pr`` (precision/recall), ``is``
(Inception Score, with pytorch-fid's weights) and ``swd`` and records how long each part took;
:func:`evaluate_run` does so for a trained run (or the toy metrics for a toy run) and
:func:`real_floor` for two halves of a real image folder (``experiments/evaluate.py`` is their CLI);
:func:`quick_image_metric` is the weight-free SWD on a few hundred images that a training loop can
afford every K steps (toy runs use :func:`wgan_gp_jax.metrics.toy.toy_metrics`).
"""

from __future__ import annotations

import logging
import os
import pathlib
import time
from typing import Callable, Sequence

import jax
import numpy as np

from wgan_gp_jax import toy_data
from wgan_gp_jax.data import idx as idx_lib
from wgan_gp_jax.data import images as images_lib

from wgan_gp_jax.metrics import classification
from wgan_gp_jax.metrics import fid as fid_lib
from wgan_gp_jax.metrics import inception
from wgan_gp_jax.metrics import inception_score as is_lib
from wgan_gp_jax.metrics import kid as kid_lib
from wgan_gp_jax.metrics import memorisation
from wgan_gp_jax.metrics import precision_recall as pr_lib
from wgan_gp_jax.metrics import reference as reference_lib
from wgan_gp_jax.metrics import swd as swd_lib
from wgan_gp_jax.metrics import toy as toy_lib
from wgan_gp_jax.metrics.reference import ReferenceFeatures

__all__ = ["IMAGE_METRICS", "INCEPTION_METRICS", "evaluate_images", "quick_image_metric",
           "evaluate_run", "per_class_fid", "labelled_images", "closest_pairs", "real_floor"]

IMAGE_METRICS = ("fid", "kid", "pr", "is", "swd")
INCEPTION_METRICS = ("fid", "kid", "pr", "is")
# FID of fewer images than this per side is mostly its small-sample bias (it grows as 1/N): a class with fewer
# samples or real images gets no per-class FID.
PER_CLASS_FID_MIN_IMAGES = 500


def evaluate_images(
    fake: np.ndarray, *, metrics: Sequence[str], real_pixels: np.ndarray | None = None,
    real_features: ReferenceFeatures | None = None,
    params: inception.InceptionParams | None = None, fake_features: np.ndarray | None = None,
    preprocessing: str = "pytorch_fid", batch_size: int = inception.DEFAULT_BATCH_SIZE,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000, seed: int = 0, kernels: str = "auto",
) -> dict:
  """Image metrics of generated ``fake`` uint8 ``(N, H, W, C)`` images against real ones.

  Args:
    fake: generated images.
    metrics: names from :data:`IMAGE_METRICS`.
    real_pixels: real images at the same resolution (needed by ``swd``; the first ``N`` are used).
    real_features: cached Inception features of the real set (needed by ``fid``, ``kid``, ``pr``).
    params: FID Inception weights (needed by the Inception metrics).
    fake_features: pool3 features of ``fake`` computed before (e.g. cached); skips the network
      for ``fid``, ``kid`` and ``pr`` (``is`` still needs ``params``).
    preprocessing, batch_size, kernels: as :func:`inception.inception_features`.
    kid_subsets, kid_subset_size: as :func:`kid_lib.kernel_inception_distance`.
    seed: seed of the KID subsets and the SWD projections.

  Returns:
    A flat dict of metric values plus ``"timings"`` (seconds per part) and ``"num_fake"``.

  Raises:
    ValueError: on an unknown metric or a missing input that a requested metric needs.
  """
  unknown = sorted(set(metrics) - set(IMAGE_METRICS))
  if unknown:
    raise ValueError(f"unknown metrics {unknown}; choose from {IMAGE_METRICS}")
  fake = np.asarray(fake)
  out: dict = {"num_fake": int(len(fake)), "timings": {}}
  needs_features = [m for m in metrics if m in INCEPTION_METRICS]
  if needs_features and real_features is None and any(m != "is" for m in needs_features):
    raise ValueError(f"metrics {needs_features} need the real set's Inception features")
  if fake_features is not None and "is" not in metrics:
    if len(fake_features) != len(fake):
      raise ValueError(f"{len(fake_features)} fake features for {len(fake)} fake images")
    feats = {"pool3": np.asarray(fake_features)}
  elif needs_features:
    if params is None:
      raise ValueError(f"metrics {needs_features} need the Inception params")
    start = time.perf_counter()
    feats = inception.inception_features(
      fake, params=params, batch_size=batch_size, preprocessing=preprocessing,
      with_logits="is" in metrics, kernels=kernels)
    seconds = time.perf_counter() - start
    out["timings"]["inception_features"] = seconds
    out["inception_images_per_second"] = len(fake) / seconds
  if "fid" in metrics:
    start = time.perf_counter()
    mu, sigma = fid_lib.gaussian_statistics(feats["pool3"])
    out["fid"] = fid_lib.frechet_distance(mu, sigma, real_features.mu, real_features.sigma)
    out["timings"]["fid"] = time.perf_counter() - start
  if "kid" in metrics:
    start = time.perf_counter()
    out.update(kid_lib.kernel_inception_distance(
      feats["pool3"], real_features.features, num_subsets=kid_subsets, subset_size=kid_subset_size,
      seed=seed))
    out["timings"]["kid"] = time.perf_counter() - start
  if "pr" in metrics:
    start = time.perf_counter()
    real = real_features.features[:len(fake)]  # Equal set sizes, as Kynkäänniemi et al.
    out.update(pr_lib.precision_recall(real, feats["pool3"]))
    out["timings"]["pr"] = time.perf_counter() - start
  if "is" in metrics:
    out.update(is_lib.inception_score(feats["logits"]))
  if "swd" in metrics:
    if real_pixels is None or len(real_pixels) < len(fake):
      raise ValueError(f"swd needs at least {len(fake)} real images at the same resolution")
    start = time.perf_counter()
    out.update(swd_lib.sliced_wasserstein_distance(real_pixels[:len(fake)], fake, seed=seed))
    out["timings"]["swd"] = time.perf_counter() - start
  return out


def quick_image_metric(fake: np.ndarray, real: np.ndarray, *, seed: int = 0) -> dict:
  """Cheap weight-free quality number for logging during training: SWD x 1e3 of ~256 images.

  Uses 32 patches per image and level and 4 x 64 projections, so 256 32x32 images take about a
  second on one CPU core. Compare values only between runs with the same ``len(fake)`` and ``seed``.

  Args:
    fake, real: uint8 ``(N, H, W, C)`` images of equal shape (e.g. 256 samples and a fixed batch of
      256 real images).

  Returns:
    ``{"swd": mean over pyramid levels, "swd_levels": {resolution: value}}``.
  """
  return swd_lib.sliced_wasserstein_distance(
    real, fake, descriptors_per_image=32, num_repeats=4, directions_per_repeat=64, seed=seed)


def _load_params(metrics: list[str], results: dict, *, weights: str | None,
                 cache: str | None) -> inception.InceptionParams | None:
  if not any(m in INCEPTION_METRICS for m in metrics):
    return None
  try:
    return inception.load_inception(weights, cache=cache)
  except (RuntimeError, FileNotFoundError, ValueError) as error:
    logging.warning("Inception metrics skipped: %s", error)
    results["inception_unavailable"] = str(error)
    return None


def evaluate_run(run, *, metrics: list[str], num_samples: int, seed: int = 0,
                 reference: str | os.PathLike | None = None, reference_split: str = "all", held_out: int = 0,
                 crop: float | None = None, weights: str | None = None, cache: str | None = None,
                 preprocessing: str = "pytorch_fid", batch_size: int = inception.DEFAULT_BATCH_SIZE,
                 kernels: str = "auto") -> dict:
  """Metrics of ``run`` (``.config`` and ``.sample(num, seed)``, as ``experiment.load_run`` gives).

  Toy runs get :func:`toy_lib.toy_metrics` against fresh real samples; image runs get ``metrics``
  against the ``reference`` image folder, preprocessed with the run's resolution, crop and channels. ``kernels`` is
  the Inception's (:func:`inception.inception_features`); the run's generator computes as ``run`` was built.

  With ``held_out`` (the run's ``data.held_out``: the last ``held_out`` of the folder's sorted images were never
  trained on; ``reference`` must be the run's image folder and ``reference_split`` "all"), ``metrics`` are against the
  training images, and the results add ``held_out`` (FID, KID and precision/recall of the same samples against the
  held-out images), ``held_out_floor`` (FID and KID of the held-out images against the training images: what a
  generator of new faces would score there) and ``memorisation`` (:func:`memorisation.memorisation_report`).

  Raises:
    ValueError: for an image run without a ``reference`` folder, or a ``held_out`` that cannot be had.
  """
  config = run.config
  results: dict = {"mode": config.kind, "num_samples": num_samples, "seed": seed}
  start = time.perf_counter()
  if config.kind == "toy":
    samples = np.asarray(run.sample(num_samples, seed))
    real = np.asarray(toy_data.sample(config.data.toy_dataset, jax.random.key(seed + 1), num_samples))
    mixture = toy_data.MIXTURES.get(config.data.toy_dataset)
    results.update(toy_lib.toy_metrics(
      samples, real, centres=None if mixture is None else mixture.centres,
      std=None if mixture is None else mixture.std))
    results["timings"] = {"toy_metrics": time.perf_counter() - start}
    return results

  if reference is None:
    if not getattr(run, "num_classes", 0) or set(metrics) - {"fid"}:
      raise ValueError("an image run needs a reference image folder (only a class-conditional run is measured without"
                       " one: its class accuracy, and with metrics=['fid'] its FID per class against its own labelled"
                       " training images)")
    fake = np.asarray(run.sample(num_samples, seed))
    results.update(_class_accuracy(run, fake, seed=seed))
    if metrics:
      results["fid_per_class"] = _run_per_class_fid(
          run, fake, params_of=lambda: _load_params(metrics, results, weights=weights, cache=cache),
          preprocessing=preprocessing, batch_size=batch_size, kernels=kernels)
    results["timings"] = {"sampling_classifiers_and_fid_per_class": time.perf_counter() - start}
    return results
  if held_out and reference_split != "all":
    raise ValueError(f"held_out={held_out} splits the whole reference folder: reference_split must be 'all', got"
                     f" {reference_split!r}")
  folder = pathlib.Path(reference)
  crop = crop if crop is not None else config.data.get("crop", images_lib.DEFAULT_FACE_CROP)
  prep = dict(resolution=config.data.resolution, crop=crop, channels=config.data.channels)
  results.update(reference=str(folder), reference_split=reference_split, preprocessing=preprocessing,
                 **prep)
  params = _load_params(metrics, results, weights=weights, cache=cache)
  if params is None:
    metrics = [m for m in metrics if m not in INCEPTION_METRICS]
  fake = np.asarray(run.sample(num_samples, seed))
  sampling = time.perf_counter() - start
  results.update(_class_accuracy(run, fake, seed=seed))
  if getattr(run, "num_classes", 0) and "fid" in metrics:
    results["fid_per_class"] = _run_per_class_fid(run, fake, params_of=lambda: params, preprocessing=preprocessing,
                                                   batch_size=batch_size, kernels=kernels)
  features_of = dict(params=params, preprocessing=preprocessing, batch_size=batch_size, cache=cache, kernels=kernels,
                     **prep)
  real_features = held_out_features = None
  training_split = reference_split
  if params is not None and (held_out or any(m in ("fid", "kid", "pr") for m in metrics)):
    real_features = reference_lib.reference_features(folder, split=reference_split, **features_of)
    if real_features.seconds:  # Computed now, not read from the cache.
      results["reference_inception_seconds"] = real_features.seconds
      results["reference_images_per_second"] = len(real_features.features) / real_features.seconds
    if held_out:
      training_split, held_out_split = reference_lib.held_out_splits(len(real_features.features), held_out)
      held_out_features = reference_lib.subset(real_features, held_out_split)
      real_features = reference_lib.subset(real_features, training_split)
      results.update(reference_split=training_split, held_out_split=held_out_split)
    results["num_real"] = int(len(real_features.features))
    results["reference_cache"] = str(real_features.path)
  real_pixels = None
  if "swd" in metrics:
    real_pixels = reference_lib.load_reference_images(folder, split=training_split, **prep)
  fake_features = None
  if held_out_features is not None:  # the samples' features serve three comparisons: computed once
    feature_start = time.perf_counter()
    fake_features = inception.inception_features(fake, params=params, batch_size=batch_size,
                                                 preprocessing=preprocessing, kernels=kernels)["pool3"]
    results["timings"] = {"inception_features": time.perf_counter() - feature_start}
  timings = results.pop("timings", {})
  results.update(evaluate_images(
    fake, metrics=metrics, real_pixels=real_pixels, real_features=real_features, params=params,
    fake_features=fake_features, preprocessing=preprocessing, batch_size=batch_size, seed=seed, kernels=kernels))
  results["timings"] = {**timings, **results["timings"]}
  if held_out_features is not None:
    distance_metrics = [m for m in ("fid", "kid", "pr") if m in metrics] or ["fid"]
    against_held_out = evaluate_images(fake, metrics=distance_metrics, real_features=held_out_features,
                                       fake_features=fake_features, seed=seed)
    results["held_out"] = {key: value for key, value in against_held_out.items() if key not in ("timings",)} | {
        "num_real": int(len(held_out_features.features))}
    results["held_out_floor"] = {
        "fid": fid_lib.frechet_distance(held_out_features.mu, held_out_features.sigma, real_features.mu,
                                        real_features.sigma),
        **kid_lib.kernel_inception_distance(held_out_features.features, real_features.features, seed=seed),
        "num_fake": int(len(held_out_features.features)), "num_real": int(len(real_features.features))}
    results["memorisation"] = memorisation.memorisation_report(fake_features, real_features.features,
                                                               held_out_features.features)
  results["timings"]["sampling"] = sampling
  return results


def _class_accuracy(run, fake: np.ndarray, *, seed: int) -> dict:
  """For a class-conditional run (``run.num_classes``): how often its ``fake`` samples (``run.labels``' classes) are
  of their class under the run's own auxiliary classifier (``own_classifier_accuracy``) and under a classifier fitted
  on its labelled held-out images (``independent_classifier``, where ``labelled_images`` has them)."""
  if not getattr(run, "num_classes", 0):
    return {}
  labels = run.labels(len(fake))
  predicted = np.argmax(run.classify(fake.astype(np.float32) / 127.5 - 1.0), axis=-1)
  results = {"own_classifier_accuracy": float(np.mean(predicted == labels))}
  held_out = labelled_images(run.config, part="held_out")
  if held_out is not None:
    results["independent_classifier"] = classification.independent_accuracy(fake, labels, *held_out, seed=seed)
  return results


def _run_per_class_fid(run, fake: np.ndarray, *, params_of: Callable[[], inception.InceptionParams | None],
                       **inception_args) -> dict:
  """``per_class_fid`` of a conditional run's samples against its labelled training images, with the Inception
  weights of ``params_of()`` (called only where every class has enough images); ``{"skipped": why}`` where the run's
  data have no labels here, a class has too few images, or the weights cannot be had."""
  real = labelled_images(run.config, part="training")
  if real is None:
    return {"skipped": "per-class FID needs labelled real images: only IDX runs' digits have them here"}
  labels = run.labels(len(fake))
  counts, skipped = _per_class_counts(labels, real[1], len(fake), PER_CLASS_FID_MIN_IMAGES)
  if skipped:
    return {"skipped": skipped, **counts}
  params = params_of()
  if params is None:
    return {"skipped": "the Inception weights cannot be had", **counts}
  return per_class_fid(fake, labels, *real, params=params, **inception_args)


def _per_class_counts(labels: np.ndarray, real_labels: np.ndarray, num_samples: int,
                      min_images: int) -> tuple[dict, str | None]:
  """The samples and real images of each class of ``labels``, and why per-class FID cannot be had (None if it can)."""
  classes = sorted(int(k) for k in np.unique(labels))
  counts = {"samples_per_class": {k: int(np.sum(labels == k)) for k in classes},
            "real_per_class": {k: int(np.sum(real_labels == k)) for k in classes}}
  fewest_samples, fewest_real = min(counts["samples_per_class"].values()), min(counts["real_per_class"].values())
  if fewest_real < min_images:
    return counts, f"a class has {fewest_real} real images; per-class FID needs {min_images}"
  if fewest_samples < min_images:
    return counts, (f"a class has {fewest_samples} of the {num_samples} samples; per-class FID needs {min_images}"
                    f" (num_samples {min_images * len(classes)} for {len(classes)} classes)")
  return counts, None


def per_class_fid(fake: np.ndarray, labels: np.ndarray, real: np.ndarray, real_labels: np.ndarray, *,
                  params: inception.InceptionParams | None, min_images: int = PER_CLASS_FID_MIN_IMAGES,
                  preprocessing: str = "pytorch_fid", batch_size: int = inception.DEFAULT_BATCH_SIZE,
                  kernels: str = "auto") -> dict:
  """FID of each class's samples against the real images of that class.

  Args:
    fake, labels: uint8 ``(N, H, W, C)`` samples and the ``(N,)`` class each was asked for.
    real, real_labels: real images and their classes, preprocessed as ``fake``.
    params: FID Inception weights.
    min_images: the fewest samples and real images a class needs (``PER_CLASS_FID_MIN_IMAGES``).

  Returns:
    ``{"fid": {class: FID}, "mean": their mean, "samples_per_class": {class: n}, "real_per_class": {class: n}}``
    where every class of ``labels`` has ``min_images`` samples and real images; else ``{"skipped": why}`` (naming
    the ``N`` that would allow it) with the counts.

  Raises:
    ValueError: on labels that do not match their images.
  """
  if len(labels) != len(fake) or len(real_labels) != len(real):
    raise ValueError(f"{len(labels)} labels for {len(fake)} samples, {len(real_labels)} for {len(real)} real images")
  counts, skipped = _per_class_counts(labels, real_labels, len(fake), min_images)
  if skipped:
    return {"skipped": skipped, **counts}
  classes = list(counts["samples_per_class"])
  features_of = dict(params=params, preprocessing=preprocessing, batch_size=batch_size, kernels=kernels)
  fake_features = inception.inception_features(fake, **features_of)["pool3"]
  of_these_classes = np.isin(real_labels, classes)
  real_features = inception.inception_features(real[of_these_classes], **features_of)["pool3"]
  real_features_labels = real_labels[of_these_classes]
  fid = {}
  for k in classes:
    mu, sigma = fid_lib.gaussian_statistics(fake_features[labels == k])
    real_mu, real_sigma = fid_lib.gaussian_statistics(real_features[real_features_labels == k])
    fid[k] = float(fid_lib.frechet_distance(mu, sigma, real_mu, real_sigma))
  return {"fid": fid, "mean": float(np.mean(list(fid.values()))), **counts}


def labelled_images(config, *, part: str) -> tuple[np.ndarray, np.ndarray] | None:
  """A run's images with their labels, preprocessed as the run's (uint8): for an ``idx_folder`` run, its training
  digits (``part="training"``: all but the last ``data.held_out``) or its ``data.held_out`` digits that it never
  trained on (``part="held_out"``; None where it holds none out); None for other data."""
  if part not in ("training", "held_out"):
    raise ValueError(f"part must be 'training' or 'held_out', got {part!r}")
  data = config.data
  held_out = data.get("held_out", 0) or 0
  if not data.get("idx_folder") or (part == "held_out" and not held_out):
    return None
  pixels, labels = idx_lib.load_idx_folder(data.idx_folder)
  preprocessing = images_lib.Preprocessing(resolution=data.resolution, crop=data.get("crop", 1.0),
                                           channels=data.channels)
  chosen = range(len(pixels) - held_out, len(pixels)) if part == "held_out" else range(len(pixels) - held_out)
  images = np.stack([images_lib.preprocess_array(pixels[i], preprocessing, name=f"digit {i}") for i in chosen])
  return images.reshape(len(chosen), data.resolution, data.resolution, data.channels), labels[list(chosen)]


def closest_pairs(run, results: dict) -> list[tuple[str, np.ndarray]]:
  """The memorisation picture's panels for ``evaluate_run(run, ..., held_out=K)``'s ``results``: the samples nearest
  to a training image, those training images, the held-out images nearest to a training image, and theirs (a
  generator that copies shows samples nearer their pair than held-out images are). ``(title, uint8 images)`` each,
  nearest pair first; ``run.sample`` is called again with the results' number of samples and seed."""
  if "memorisation" not in results:
    raise ValueError("closest_pairs needs the results of evaluate_run with held_out (they have no 'memorisation')")
  report = results["memorisation"]
  prep = dict(resolution=results["resolution"], crop=results["crop"], channels=results["channels"])
  training, held_out = (reference_lib.load_reference_images(results["reference"], split=results[split], **prep)
                        for split in ("reference_split", "held_out_split"))
  samples = np.asarray(run.sample(results["num_samples"], results["seed"]))
  nearest_samples, nearest_held_out = report["closest_samples"], report["closest_held_out"]
  return [("samples nearest a training image", samples[[pair["index"] for pair in nearest_samples]]),
          ("their nearest training images", training[[pair["training_index"] for pair in nearest_samples]]),
          ("held-out images nearest a training image", held_out[[pair["index"] for pair in nearest_held_out]]),
          ("their nearest training images", training[[pair["training_index"] for pair in nearest_held_out]])]


def real_floor(*, reference: str | os.PathLike, metrics: list[str], num_samples: int,
               resolution: int, seed: int = 0, crop: float | None = None, weights: str | None = None,
               cache: str | None = None, preprocessing: str = "pytorch_fid",
               batch_size: int = inception.DEFAULT_BATCH_SIZE, kernels: str = "auto") -> dict:
  """Metrics of reference images ``[0, N)`` against ``[N, 2N)``: the best a model can score; ``kernels`` is the
  Inception's (:func:`inception.inception_features`)."""
  folder = pathlib.Path(reference)
  crop = crop if crop is not None else images_lib.DEFAULT_FACE_CROP
  prep = dict(resolution=resolution, crop=crop, channels=3)
  splits = [f"0:{num_samples}", f"{num_samples}:{2 * num_samples}"]
  results: dict = {"mode": "real_floor", "num_samples": num_samples, "seed": seed,
                   "reference": str(folder), "splits": splits, "preprocessing": preprocessing, **prep}
  params = _load_params(metrics, results, weights=weights, cache=cache)
  if params is None:
    metrics = [m for m in metrics if m not in INCEPTION_METRICS]
  first, second = (reference_lib.load_reference_images(folder, split=s, **prep) for s in splits)
  halves = [None, None]
  if params is not None:  # Both halves go through the reference cache: a rerun costs no network.
    halves = [reference_lib.reference_features(
      folder, params=params, split=s, preprocessing=preprocessing, batch_size=batch_size,
      cache=cache, kernels=kernels, **prep) for s in splits]
  results.update(evaluate_images(
    first, metrics=metrics, real_pixels=second, real_features=halves[1], params=params,
    fake_features=None if halves[0] is None else halves[0].features,
    preprocessing=preprocessing, batch_size=batch_size, seed=seed, kernels=kernels))
  computed = [h for h in halves if h is not None and h.seconds]
  if computed:
    results["timings"]["inception_features"] = sum(h.seconds for h in computed)
    results["inception_images_per_second"] = sum(len(h.features) for h in computed) / sum(
      h.seconds for h in computed)
  return results
