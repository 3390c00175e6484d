"""The training input pipeline: a TFDS data source (array_record, no TensorFlow) -> grain -> the device mesh.

Each process reads its own part of the train split (`tfds.split_for_jax_process`: contiguous, disjoint, together the
whole split), shuffles it globally with grain (a new permutation each epoch), optionally flips images horizontally,
and groups `n_critic` local batches into one item: all the real data one generator iteration needs. The order of
items and the flips are a pure function of (`config.seed`, process, position), and the iterator's position is its
state (`get_state()`/`set_state()`, JSON-serializable, saved with checkpoints), so a resumed run sees exactly the
data it would have seen.
"""

from __future__ import annotations

import collections
import copy
import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from wgan_gp_jax.data import images, prepare

IMAGE_KEY = "image"


def make_train_iterator(config: ml_collections.ConfigDict, *, process_index: int | None = None,
                        process_count: int | None = None) -> grain.DatasetIterator:
  """An infinite, checkpointable iterator of this process's real images for training.

  Each item is a float32 numpy array in [-1, 1] of shape
  `(config.n_critic, config.batch_size // process_count, resolution, resolution, channels)`.

  Keys of the `data` config group: `image_folder` (a folder or .zip of images, prepared into a TFDS dataset under
  `data_dir` on first use; "" to use `dataset`), `dataset` (a TFDS name such as "celeb_a", "mnist", "fashion_mnist" or
  "cifar10", read from `data_dir` in array_record format), `data_dir` (a TFDS data dir, or None for TFDS's default),
  `resolution`, `channels` (1 or 3), `crop` (side of the center square crop as a fraction of the shorter image side,
  default `images.DEFAULT_FACE_CROP`), `random_flip`; and of the config itself: `seed`, `batch_size` (global) and
  `n_critic`.

  `process_index` and `process_count` default to `jax.process_index()` and `jax.process_count()`.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if config.batch_size % process_count:
    raise ValueError(f"batch_size {config.batch_size} is the global batch size: it must be divisible by the"
                     f" {process_count} processes")
  if config.n_critic < 1:
    raise ValueError(f"n_critic must be at least 1, got {config.n_critic}")
  local_batch_size = config.batch_size // process_count
  data = config.data
  preprocessing = images.Preprocessing(resolution=data.resolution, crop=data.get("crop", images.DEFAULT_FACE_CROP),
                                       channels=data.channels)
  split = tfds.split_for_jax_process(prepare.SPLIT, process_index=process_index, process_count=process_count)
  data_source, to_image = _open_data_source(data, preprocessing, split=split)
  if len(data_source) == 0:
    raise ValueError(f"process {process_index} of {process_count} got no examples from split {split!r}")

  dataset = grain.MapDataset.source(data_source).seed(config.seed).shuffle().map(to_image)
  dataset = dataset.repeat().batch(config.n_critic * local_batch_size, drop_remainder=True)
  if data.random_flip:
    dataset = dataset.random_map(_random_horizontal_flips)
  dataset = dataset.map(functools.partial(_scale_and_split, n_critic=config.n_critic))
  threads = min(4, os.cpu_count() or 1)
  return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads)))


def _open_data_source(config: ml_collections.ConfigDict, preprocessing: images.Preprocessing, *,
                      split: str) -> tuple[Sequence[Mapping[str, Any]], _ToImage]:
  if config.image_folder:
    prepared = prepare.prepare_image_folder(config.image_folder, resolution=preprocessing.resolution,
                                            crop=preprocessing.crop, channels=preprocessing.channels,
                                            data_dir=config.data_dir)
    builder = tfds.builder_from_directory(os.fspath(prepared.directory))
    # Stored already preprocessed (see prepare.py): nothing to do at read time but check the shape.
    to_image = _ToImage(preprocessing, stored_preprocessed=True, description=str(prepared.directory))
    return builder.as_data_source(split=split), to_image
  try:
    data_source = tfds.data_source(config.dataset, split=split, data_dir=config.data_dir, download=False)
  except Exception as error:  # TFDS raises many types here (not found, not array_record, bad version...).
    raise ValueError(
        f"cannot read TFDS dataset {config.dataset!r} (split {split!r}) from data_dir {config.data_dir!r} without"
        f" TensorFlow: it must be prepared there in array_record format (e.g. `tfds build {config.dataset}"
        f" --file_format=array_record`), or set config.data.image_folder to a folder or zip of images.\nCause: {error!r}"
    ) from error
  features = data_source.dataset_info.features
  if IMAGE_KEY not in features:
    raise ValueError(f"TFDS dataset {config.dataset!r} has no {IMAGE_KEY!r} feature (features: {list(features)})")
  height, width = features[IMAGE_KEY].shape[:2]
  if height is not None and width is not None:  # Refuse at start-up, not mid-run, images too small for the crop.
    images.check_large_enough(width, height, preprocessing, name=f"TFDS dataset {config.dataset}")
  return data_source, _ToImage(preprocessing, stored_preprocessed=False, description=config.dataset)


class _ToImage:
  """Takes a record's image, preprocesses it unless it was stored preprocessed, and checks its shape."""

  def __init__(self, preprocessing: images.Preprocessing, *, stored_preprocessed: bool, description: str):
    self._preprocessing = preprocessing
    self._stored_preprocessed = stored_preprocessed
    self._description = description

  def __call__(self, record: Mapping[str, Any]) -> np.ndarray:
    image = np.asarray(record[IMAGE_KEY])
    if not self._stored_preprocessed:
      image = images.preprocess_array(image, self._preprocessing, name=f"a record of {self._description}")
    if image.shape != self._preprocessing.shape or image.dtype != np.uint8:
      raise ValueError(f"a record of {self._description} has a {image.dtype} image of shape {image.shape}, expected"
                       f" uint8 {self._preprocessing.shape}")
    return image


def _random_horizontal_flips(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Flips each image of a uint8 (N, H, W, C) batch left-right with probability 1/2 (one generator per batch)."""
  flip = rng.random(len(batch)) < 0.5
  batch[flip] = batch[flip, :, ::-1]  # In place: the batch was just stacked for this item alone.
  return batch


def _scale_and_split(batch: np.ndarray, *, n_critic: int) -> np.ndarray:
  """uint8 images -> float32 in [-1, 1] (0 -> -1 and 255 -> 1 exactly), shaped (n_critic, local batch, H, W, C)."""
  batch = batch.astype(np.float32)
  batch /= 127.5
  batch -= 1.0
  return batch.reshape(n_critic, -1, *batch.shape[1:])


def to_global(local_batch: np.ndarray, sharding: jax.sharding.NamedSharding) -> jax.Array:
  """Assembles every process's `local_batch` into one global array laid out by `sharding`.

  With `NamedSharding(mesh, P(None, "data"))` the batch axis (axis 1) is split over the mesh's "data" axis: the global
  batch is the processes' local batches side by side, in the order of their devices on that axis.
  """
  return jax.make_array_from_process_local_data(sharding, local_batch)


class DevicePrefetcher(grain.DatasetIterator):
  """Yields global `jax.Array`s of a host iterator's items, keeping `size` items already on their way to the devices.

  Its state (`get_state()`) is the host iterator's state right after the last item handed out, not after the
  read-ahead, so a checkpoint taken after training on item k resumes at item k + 1. Being a `grain.DatasetIterator`,
  it can be saved with grain's orbax checkpoint handler like the host iterator itself.
  """

  def __init__(self, iterator: grain.DatasetIterator, sharding: jax.sharding.NamedSharding, *, size: int = 2):
    super().__init__()
    if size < 1:
      raise ValueError(f"size must be at least 1, got {size}")
    self._iterator = iterator
    self._sharding = sharding
    self._size = size
    self._queue: collections.deque[tuple[jax.Array, dict[str, Any]]] = collections.deque()
    self._state = copy.deepcopy(iterator.get_state())

  def _fill(self) -> None:
    while len(self._queue) < self._size:
      local_batch = next(self._iterator)
      self._queue.append((to_global(local_batch, self._sharding), copy.deepcopy(self._iterator.get_state())))

  def __next__(self) -> jax.Array:
    self._fill()
    global_batch, self._state = self._queue.popleft()
    self._fill()  # Start the next transfers now, so they overlap the step that consumes this batch.
    return global_batch

  def get_state(self) -> dict[str, Any]:
    return copy.deepcopy(self._state)

  def set_state(self, state: dict[str, Any]) -> None:
    self._queue.clear()
    self._iterator.set_state(copy.deepcopy(state))
    self._state = copy.deepcopy(state)


def prefetch_to_device(iterator: grain.DatasetIterator, sharding: jax.sharding.NamedSharding, *,
                       size: int = 2) -> DevicePrefetcher:
  """See `DevicePrefetcher`."""
  return DevicePrefetcher(iterator, sharding, size=size)
