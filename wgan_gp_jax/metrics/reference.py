"""Inception features of a real dataset, computed once and cached.

The cache key is the dataset (folder name plus a digest of its file names and sizes), the split (a
slice of the sorted usable images, ``"all"`` or ``"start:stop"``), the resolution, crop and channels
the images are preprocessed to (exactly as for training, :mod:`wgan_gp_jax.data.images`), the
Inception weights and the Inception preprocessing. The file is an ``.npz`` with the ``(N, 2048)``
pool3 features (KID and precision/recall need them, not only the statistics), their float64 mean and
covariance, and the key. It is written next to the data (``<folder>/../reference_stats/``) where that
is writable (by its permission bits: read-only shared data stays untouched even for root), else
under the cache folder (``<cache>/reference_stats/``); both are searched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import tempfile
import time

import numpy as np

from wgan_gp_jax.data import images as images_lib
from wgan_gp_jax.metrics import fid as fid_lib
from wgan_gp_jax.metrics import inception

__all__ = ["ReferenceFeatures", "parse_split", "load_reference_images", "reference_features", "held_out_splits",
           "subset"]

_CACHE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ReferenceFeatures:
  """Pool3 features of real images with their statistics and where they came from."""
  features: np.ndarray
  mu: np.ndarray
  sigma: np.ndarray
  key: dict
  path: pathlib.Path
  seconds: float  # Feature-extraction time when computed, 0.0 when read from the cache.


def parse_split(split: str, total: int) -> slice:
  """``"all"`` or ``"start:stop"`` (indices into the sorted usable images) as a slice.

  Raises:
    ValueError: on another form, or a range outside ``[0, total]`` or empty.
  """
  if split == "all":
    return slice(0, total)
  try:
    start, stop = (int(v) for v in split.split(":"))
  except ValueError:
    raise ValueError(f"split must be 'all' or 'start:stop', got {split!r}") from None
  if not 0 <= start < stop <= total:
    raise ValueError(f"split {split!r} is not a non-empty range within the {total} images")
  return slice(start, stop)


def held_out_splits(total: int, held_out: int) -> tuple[str, str]:
  """The training and held-out splits (``"start:stop"``) of ``total`` sorted images whose last ``held_out`` a run
  never trains on (its ``data.held_out``).

  Raises:
    ValueError: unless ``0 < held_out < total``.
  """
  if not 0 < held_out < total:
    raise ValueError(f"data.held_out={held_out} must keep out some but not all of the {total} images")
  return f"0:{total - held_out}", f"{total - held_out}:{total}"


def subset(features: ReferenceFeatures, split: str) -> ReferenceFeatures:
  """The ``split`` (``"start:stop"`` of ``features``' own images) of ``features``, with its own statistics."""
  part = parse_split(split, len(features.features))
  chosen = features.features[part]
  mu, sigma = fid_lib.gaussian_statistics(chosen)
  start = 0 if features.key["split"] == "all" else parse_split(features.key["split"], 2**62).start
  key = {**features.key, "split": f"{start + part.start}:{start + part.stop}"}
  return ReferenceFeatures(chosen, mu, sigma, key, features.path, 0.0)


def _dataset_id(folder: pathlib.Path) -> str:
  names = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
  digest = hashlib.sha256()
  for p in names:
    digest.update(f"{p.relative_to(folder)}\0{p.stat().st_size}\n".encode())
  dataset = folder.name if folder.name != "images" else folder.parent.name
  return f"{dataset}-{len(names)}-{digest.hexdigest()[:12]}"


def load_reference_images(folder: str | os.PathLike, *, split: str = "all", resolution: int,
                          crop: float = images_lib.DEFAULT_FACE_CROP, channels: int = 3) -> np.ndarray:
  """The split of a folder's images, preprocessed as for training: uint8 ``(N, res, res, C)``."""
  stop = None if split == "all" else parse_split(split, 2**62).stop  # Read no further than needed.
  loaded = images_lib.load_folder_images(folder, resolution=resolution, crop=crop, channels=channels,
                                         limit=stop)
  return loaded[parse_split(split, len(loaded))]


def _candidates(folder: pathlib.Path, cache: str | os.PathLike | None, name: str) -> list[pathlib.Path]:
  return [folder.parent / "reference_stats" / name,
          inception.cache_dir(cache) / "reference_stats" / name]


def _writable(folder: pathlib.Path) -> bool:
  """Whether ``folder`` (or its nearest existing ancestor) is meant to be written to.

  Judged by its permission bits as well as ``os.access``: root may write into a folder marked
  read-only (such as the shared data), and must not.
  """
  while not folder.exists():
    folder = folder.parent
  return bool(folder.stat().st_mode & 0o222) and os.access(folder, os.W_OK)


def _write(path: pathlib.Path, **arrays) -> bool:
  if not _writable(path.parent):
    return False
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as f:
      np.savez(f, **arrays)
    os.chmod(f.name, 0o644)
    os.replace(f.name, path)
    return True
  except OSError:
    return False


def reference_features(
    folder: str | os.PathLike, *, params: inception.InceptionParams, resolution: int,
    crop: float = images_lib.DEFAULT_FACE_CROP, channels: int = 3, split: str = "all",
    preprocessing: str = "pytorch_fid", batch_size: int = inception.DEFAULT_BATCH_SIZE,
    cache: str | os.PathLike | None = None, kernels: str = "auto") -> ReferenceFeatures:
  """Pool3 features and FID statistics of a folder of real images, from the cache or computed once.

  Args:
    folder: the image folder (or zip), read by :func:`wgan_gp_jax.data.images.load_folder_images`.
    params: FID Inception weights (:func:`inception.load_inception`).
    resolution, crop, channels: the training preprocessing of the images.
    split: ``"all"`` or ``"start:stop"`` of the sorted usable images.
    preprocessing: the Inception preprocessing (:data:`inception.PREPROCESSINGS`).
    batch_size: images per compiled Inception call.
    cache: the cache folder (:func:`inception.cache_dir`).
    kernels: how the Inception computes its convolutions (:func:`inception.inception_features`); the features of
      every choice agree to float32 rounding, so it is not part of the cache's key.
  """
  folder = pathlib.Path(folder).expanduser().resolve()
  if not folder.exists():
    raise ValueError(f"reference image folder not found: {folder}")
  key = {"version": _CACHE_VERSION, "dataset": _dataset_id(folder), "split": split,
         "resolution": resolution, "crop": round(float(crop), 6), "channels": channels,
         "weights": pathlib.Path(params.source).name, "preprocessing": preprocessing}
  cached = _read_cached(folder, cache, key)
  if cached is None and split != "all":  # A slice of the whole folder's cached features will do.
    whole = _read_cached(folder, cache, {**key, "split": "all"})
    if whole is not None:
      cached = subset(whole, split)
  if cached is not None:
    return cached
  pixels = load_reference_images(folder, split=split, resolution=resolution, crop=crop, channels=channels)
  logging.info("computing Inception features of %d reference images from %s", len(pixels), folder)
  start = time.perf_counter()
  features = inception.inception_features(
    pixels, params=params, batch_size=batch_size, preprocessing=preprocessing, kernels=kernels)["pool3"]
  seconds = time.perf_counter() - start
  mu, sigma = fid_lib.gaussian_statistics(features)
  for path in _candidates(folder, cache, _file_name(key)):
    if _write(path, features=features, mu=mu, sigma=sigma, key=json.dumps(key)):
      return ReferenceFeatures(features, mu, sigma, key, path, seconds)
  raise OSError(f"could not write reference features to any of {_candidates(folder, cache, _file_name(key))}")


def _file_name(key: dict) -> str:
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
  split = key["split"].replace(":", "-")
  return f"{key['dataset'].split('-')[0]}_{split}_{key['resolution']}px_{key['preprocessing']}_{digest}.npz"


def _read_cached(folder: pathlib.Path, cache: str | os.PathLike | None, key: dict) -> ReferenceFeatures | None:
  for path in _candidates(folder, cache, _file_name(key)):
    if path.is_file():
      with np.load(path) as data:
        if json.loads(str(data["key"])) == key:
          return ReferenceFeatures(data["features"], data["mu"], data["sigma"], key, path, 0.0)
  return None
