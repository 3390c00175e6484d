"""The training input pipeline: a TFDS data source (array_record, no TensorFlow) -> grain -> the device mesh.

The global order of the examples does not depend on the number of processes: every process draws the same
permutation of the whole train split with grain (a new one each epoch), the global batches of an iteration are the
next `n_critic * batch_size` examples of it, and each process reads only its own slice of each of the `n_critic`
batches (`batch_size / process_count` examples, in process order). Horizontal flips, when on, are a function of
(`config.seed`, the example's global position). So the global batches of 2 processes are those of 1 process, and the
iterator's position (`get_state()`/`set_state()`, JSON-serializable, saved with checkpoints) is the number of
iterations read, the same on every process: a run resumed on another number of processes continues with the same
examples in the same order, none repeated or skipped.
"""

from __future__ import annotations

import collections
import copy
import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import grain
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from wgan_gp_jax.data import idx, images, prepare

IMAGE_KEY = "image"


class LabelledImages(NamedTuple):
  """An item of a labelled iterator: the images as an unlabelled one gives them and their int32 class labels
  ``(n_critic, local batch)``, which travel with them (through the shuffle, the flips and a resume)."""
  images: np.ndarray
  labels: np.ndarray


def make_train_iterator(config: ml_collections.ConfigDict, *, with_labels: bool = False,
                        process_index: int | None = None, process_count: int | None = None) -> grain.DatasetIterator:
  """An infinite, checkpointable iterator of this process's real images for training.

  Each item is a float32 numpy array in [-1, 1] of shape
  `(config.n_critic, config.batch_size // process_count, resolution, resolution, channels)`; `with_labels`, a
  `LabelledImages` of it and its labels (the dataset's `label` feature: TFDS's labelled datasets, an `idx_folder`).

  Keys of the `data` config group: `image_folder` (a folder or .zip of images, prepared into a TFDS dataset under
  `data_dir` on first use; "" to use `dataset`), `dataset` (a TFDS name such as "celeb_a", "mnist", "fashion_mnist" or
  "cifar10", read from `data_dir` in array_record format), `data_dir` (a TFDS data dir, or None for TFDS's default),
  `idx_folder` (a folder of MNIST IDX files, prepared into a TFDS dataset under `data_dir` on first use),
  `resolution`, `channels` (1 or 3), `crop` (side of the center square crop as a fraction of the shorter image side,
  default `images.DEFAULT_FACE_CROP`), `random_flip`, `held_out` (so many examples are never read: the images whose
  file names sort last, or the split's last examples where they have no file name); and of the config itself: `seed`, `batch_size` (global) and
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
  data_source, to_image = _open_data_source(data, preprocessing, split=prepare.SPLIT)
  if len(data_source) == 0:
    raise ValueError(f"the train split of {to_image.description} has no examples")
  if with_labels and prepare.LABEL_KEY not in data_source[0]:
    raise images.ImageSourceError(
        f"config.model.num_classes: {to_image.description} has no {prepare.LABEL_KEY!r} feature, and a class-conditional"
        " model needs labelled data (a labelled TFDS dataset such as mnist or cifar10, or config.data.idx_folder)")
  held_out = data.get("held_out", 0)
  if held_out:
    data_source = _TrainingExamples(data_source, held_out,
                                    description=data.image_folder or data.get("idx_folder") or data.dataset)

  # Every process: the same shuffled, repeated order of the training examples, read at the global positions of its
  # slices.
  examples = grain.MapDataset.source(data_source).seed(config.seed).shuffle().repeat()
  global_positions = grain.MapDataset.range(0, _MAX_POSITIONS).map(functools.partial(
      _global_position, n_critic=config.n_critic, batch_size=config.batch_size, local_batch_size=local_batch_size,
      process_index=process_index))
  dataset = global_positions.batch(config.n_critic * local_batch_size, drop_remainder=True).map(
      _ReadItem(examples, to_image, n_critic=config.n_critic, flip_seed=config.seed if data.random_flip else None,
                with_labels=with_labels))
  threads = min(4, os.cpu_count() or 1)
  return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads)))


class _TrainingExamples(Sequence):
  """The examples of a data source less the ``held_out`` whose file names sort last (a prepared image folder's: the
  images ``metrics.reference`` reads last from the folder), or less its last ``held_out`` where examples have no file
  name (a TFDS dataset)."""

  def __init__(self, source: Sequence[Mapping[str, Any]], held_out: int, *, description: str):
    total = len(source)
    if held_out >= total:
      raise images.ImageSourceError(f"config.data.held_out: {held_out} keeps out every one of the {total} images of"
                                    f" {description} (0: train on every one)")
    if total and "filename" in source[0]:
      by_name = sorted(range(total), key=lambda index: source[index]["filename"])
      kept = set(by_name[:total - held_out])
      self._indices = [index for index in range(total) if index in kept]  # the source's own order
    else:
      self._indices = list(range(total - held_out))
    self._source = source

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int) -> Mapping[str, Any]:
    return self._source[self._indices[index]]


# Local positions beyond any run's length (2^62 examples), so that the position dataset's length never matters.
_MAX_POSITIONS = 2**62


def _global_position(local_position: int, *, n_critic: int, batch_size: int, local_batch_size: int,
                     process_index: int) -> int:
  """The global position of a process's ``local_position``-th example: its slice of each global batch in turn."""
  iteration, within = divmod(local_position, n_critic * local_batch_size)
  batch, index = divmod(within, local_batch_size)
  return iteration * n_critic * batch_size + batch * batch_size + process_index * local_batch_size + index


class _ReadItem:
  """Global positions (n_critic * local batch,) -> the images at them, flipped where chosen, scaled and split (with
  their labels where asked)."""

  def __init__(self, examples: grain.MapDataset, to_image: "_ToImage", *, n_critic: int, flip_seed: int | None,
               with_labels: bool = False):
    self._examples = examples
    self._to_image = to_image
    self._n_critic = n_critic
    self._flip_seed = flip_seed
    self._with_labels = with_labels

  def __call__(self, positions: np.ndarray) -> np.ndarray | LabelledImages:
    records = [self._examples[int(position)] for position in positions]
    batch = np.stack([self._to_image(record) for record in records])
    if self._flip_seed is not None:
      flip = flip_choices(self._flip_seed, positions)
      batch[flip] = batch[flip, :, ::-1]
    images = _scale_and_split(batch, n_critic=self._n_critic)
    if not self._with_labels:
      return images
    labels = np.asarray([record[prepare.LABEL_KEY] for record in records], np.int32)
    return LabelledImages(images, labels.reshape(self._n_critic, -1))


def flip_choices(seed: int, positions: np.ndarray) -> np.ndarray:
  """Whether the examples at global ``positions`` are mirrored: a fair coin per (seed, position) (SplitMix64)."""
  with np.errstate(over="ignore"):
    x = np.asarray(positions, np.uint64) + np.uint64(seed & (2**64 - 1)) * np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
  return (x >> np.uint64(63)).astype(bool)


def _open_data_source(config: ml_collections.ConfigDict, preprocessing: images.Preprocessing, *,
                      split: str) -> tuple[Sequence[Mapping[str, Any]], _ToImage]:
  if config.get("idx_folder"):
    try:
      directory = prepare.prepare_idx_folder(config.idx_folder, data_dir=config.data_dir)
    except idx.IdxError as error:
      raise images.ImageSourceError(f"config.data.idx_folder: {error}") from error
    builder = tfds.builder_from_directory(os.fspath(directory))
    return builder.as_data_source(split=split), _ToImage(preprocessing, stored_preprocessed=False,
                                                         description=str(config.idx_folder))
  if config.image_folder:
    try:
      prepared = prepare.prepare_image_folder(config.image_folder, resolution=preprocessing.resolution,
                                              crop=preprocessing.crop, channels=preprocessing.channels,
                                              data_dir=config.data_dir)
    except images.ImageSourceError as error:  # the same class, the config key named
      raise type(error)(f"config.data.image_folder: {error}") from error
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
    self.description = description

  def __call__(self, record: Mapping[str, Any]) -> np.ndarray:
    image = np.asarray(record[IMAGE_KEY])
    if not self._stored_preprocessed:
      image = images.preprocess_array(image, self._preprocessing, name=f"a record of {self.description}")
    if image.shape != self._preprocessing.shape or image.dtype != np.uint8:
      raise ValueError(f"a record of {self.description} has a {image.dtype} image of shape {image.shape}, expected"
                       f" uint8 {self._preprocessing.shape}")
    return image


def _scale_and_split(batch: np.ndarray, *, n_critic: int) -> np.ndarray:
  """uint8 images -> float32 in [-1, 1] (0 -> -1 and 255 -> 1 exactly), shaped (n_critic, local batch, H, W, C)."""
  batch = batch.astype(np.float32)
  batch /= 127.5
  batch -= 1.0
  return batch.reshape(n_critic, -1, *batch.shape[1:])


def to_global(local_batch: np.ndarray | LabelledImages, sharding: jax.sharding.NamedSharding) -> Any:
  """Assembles every process's `local_batch` (an array, or each array of a `LabelledImages`) into one global array
  laid out by `sharding`.

  With `NamedSharding(mesh, P(None, "data"))` the batch axis (axis 1) is split over the mesh's "data" axis: the global
  batch is the processes' local batches side by side, in the order of their devices on that axis.
  """
  return jax.tree.map(lambda part: jax.make_array_from_process_local_data(sharding, part), local_batch)


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
