"""Converting a folder or zip of images once into an array_record TFDS dataset, without TensorFlow.

Where a prepared dataset lives: `<data_dir>/folder_<source name>/<resolution>px_crop<crop in 1/1000>_<rgb|grey>_<
fingerprint>/1.0.0/`, where `data_dir` is `config.data_dir` (or `--out`), defaulting to TFDS's default data dir
(`$TFDS_DATA_DIR`, else `~/tensorflow_datasets`), and the fingerprint hashes the source's absolute path, each file's
name, size and content version (mtime in a folder, CRC in a zip) and the preprocessing. A changed folder therefore
gets a new dataset instead of silently reusing a stale one. Read it like any other TFDS dataset:
`tfds.builder_from_directory(dir).as_data_source("train")`, or `tfds.data_source("folder_<name>/<config>",
data_dir=data_dir)`.

What is stored: each image already preprocessed (`images.preprocess_image`: crop, resize, channels) as a raw uint8
`tfds.features.Tensor`, plus its file name. Trade-off: storing the encoded files and preprocessing at read time would
keep one dataset for every resolution and crop, but each read would decode a JPEG and resize it (about 0.5 ms per
image here, every epoch, on the same 2 cores that train). Raw tensors make a read little more than a copy, so the
pipeline takes a small share of the CPU (docs/data.md gives measured rates); the price is disk
(H*W*C bytes per image: 12 KiB at 64x64 RGB, 2.5 GB for all 202,599 CelebA images, 10 GB at 128x128) and one
preparation per (resolution, crop, channels), which is done automatically on first use (about 20 s for the 10k faces
here, minutes for all of CelebA).

The examples are written in a fixed pseudo-random order of the files (seed `WRITE_ORDER_SEED`), like TFDS shuffles
at generation time, so that the contiguous per-process ranges of `tfds.split_for_jax_process` are each a uniform
sample of the folder even when its files are grouped (e.g. by person).

A preparation is atomic: everything, including `preparation_report.json`, is written to a sibling
`incomplete.<random>_1.0.0` directory that is renamed to `1.0.0` only when complete, so a killed preparation is never
taken for a complete one (its leftover `incomplete.*` directory can be deleted).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import os
import pathlib
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import file_adapters

from wgan_gp_jax.data import images

PREPARED_VERSION = "1.0.0"
SPLIT = "train"
WRITE_ORDER_SEED = 0
REPORT_FILENAME = "preparation_report.json"
_SHARD_BYTES = 64 * 2**20  # Examples are buffered per shard while writing.
_INCOMPLETE_PREFIX = "incomplete."


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreparedDataset:
  """A prepared image folder: its TFDS dataset directory and the report of its preparation."""

  directory: pathlib.Path
  report: Mapping[str, Any]
  newly_prepared: bool

  @property
  def num_examples(self) -> int:
    return self.report["images_written"]


def default_data_dir() -> pathlib.Path:
  """TFDS's default data dir: `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`."""
  return pathlib.Path(tfds.core.constants.DATA_DIR).expanduser()


def dataset_name_for(source: images.ImageSource) -> str:
  """`folder_<stem of the folder or zip>`, as a valid TFDS dataset name."""
  stem = source.path.name.removesuffix(".zip")
  slug = re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_") or "images"
  return f"folder_{slug}"


def config_name_for(source: images.ImageSource, preprocessing: images.Preprocessing) -> str:
  identity = json.dumps({"source": source.fingerprint(), "preprocessing": preprocessing.to_json()})
  fingerprint = hashlib.sha256(identity.encode()).hexdigest()[:12]
  colour = "rgb" if preprocessing.channels == 3 else "grey"
  return f"{preprocessing.resolution}px_crop{round(preprocessing.crop * 1000)}_{colour}_{fingerprint}"


def prepared_dataset_dir(source: images.ImageSource, preprocessing: images.Preprocessing, *,
                         data_dir: str | os.PathLike[str] | None) -> pathlib.Path:
  """Where `prepare_image_folder` puts (or has put) the dataset for this source and preprocessing."""
  root = default_data_dir() if data_dir is None else pathlib.Path(data_dir).expanduser()
  return root / dataset_name_for(source) / config_name_for(source, preprocessing) / PREPARED_VERSION


def prepare_image_folder(image_folder: str | os.PathLike[str], *, resolution: int,
                         crop: float = images.DEFAULT_FACE_CROP, channels: int = 3,
                         data_dir: str | os.PathLike[str] | None = None) -> PreparedDataset:
  """Returns the prepared dataset of a folder or zip of images, preparing it first unless that was done already.

  Unusable files (not an image, corrupt or truncated, unsupported pixel format, too small for the crop) are skipped
  and listed by category in the report (logged, and saved as `preparation_report.json` in the dataset directory).
  Raises ``images.ImageSourceNotFoundError`` (a FileNotFoundError) for a missing path, and ``images.ImageSourceError``
  (a ValueError) for a source with no usable image.
  """
  preprocessing = images.Preprocessing(resolution=resolution, crop=crop, channels=channels)
  with images.ImageSource.open(image_folder) as source:
    directory = prepared_dataset_dir(source, preprocessing, data_dir=data_dir)
    newly_prepared = not directory.is_dir()
    if newly_prepared:
      _prepare_atomically(source, preprocessing, directory)
  return PreparedDataset(directory=directory, report=json.loads((directory / REPORT_FILENAME).read_text()),
                         newly_prepared=newly_prepared)


def _prepare_atomically(source: images.ImageSource, preprocessing: images.Preprocessing,
                        directory: pathlib.Path) -> None:
  if not source.names:
    raise images.ImageSourceError(f"no files in {source.path}: an image folder or zip needs at least one image")
  logging.info("Preparing %d files of %s into %s", len(source.names), source.path, directory)
  incomplete = directory.with_name(f"{_INCOMPLETE_PREFIX}{uuid.uuid4().hex}_{directory.name}")
  incomplete.mkdir(parents=True)
  try:
    report = _write_prepared(source, preprocessing, incomplete, dataset_name=dataset_name_for(source))
    try:
      incomplete.rename(directory)
    except OSError:
      if not directory.is_dir():
        raise
      logging.info("Another process prepared %s first; using that one.", directory)
      return
  finally:
    shutil.rmtree(incomplete, ignore_errors=True)
  log = logging.warning if report["skipped"] else logging.info
  log("Prepared image folder:\n%s", format_report(report, directory=directory))


def _write_prepared(source: images.ImageSource, preprocessing: images.Preprocessing, directory: pathlib.Path, *,
                    dataset_name: str) -> dict[str, Any]:
  write_order = [source.names[i] for i in np.random.default_rng(WRITE_ORDER_SEED).permutation(len(source.names))]
  skipped: dict[str, list[str]] = {}

  def usable_examples() -> Iterator[dict[str, Any]]:
    for name, result in images.iter_preprocessed(source, preprocessing, names=write_order):
      if isinstance(result, images.ImageFileError):
        skipped.setdefault(result.category, []).append(str(result))
      else:
        yield {"image": result, "filename": name}

  features = prepared_features(preprocessing)
  num_written = write_array_record_dataset(directory, dataset_name=dataset_name, features=features,
                                           examples=usable_examples(),
                                           examples_per_shard=_SHARD_BYTES // int(np.prod(preprocessing.shape)),
                                           description=f"Images of {source.path}, preprocessed as"
                                           f" {preprocessing.to_json()} by wgan_gp_jax.data.prepare.")
  report = {
      "source": str(source.path),
      "files": len(source.names),
      "images_written": num_written,
      "skipped": {category: len(messages) for category, messages in sorted(skipped.items())},
      "skipped_files": {category: sorted(messages) for category, messages in sorted(skipped.items())},
      "preprocessing": preprocessing.to_json(),
  }
  if num_written == 0:
    raise images.ImageSourceError(f"none of the {len(source.names)} files in {source.path} is a usable image:\n"
                                  + format_report(report, directory=None))
  (directory / REPORT_FILENAME).write_text(json.dumps(report, indent=2))
  return report


LABEL_KEY = "label"


def prepare_idx_folder(idx_folder: str | os.PathLike[str], *,
                       data_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
  """The TFDS dataset directory of a folder of MNIST IDX files (``idx.load_idx_folder``), preparing it first unless
  that was done already: ``image`` (uint8 ``(H, W, 1)``, as stored: the pipeline preprocesses it at read time, as it
  does TFDS's ``mnist``) and ``label`` (a ``ClassLabel``), in the files' order, under
  ``<data_dir>/idx_<folder name>/<fingerprint of the files>/1.0.0``. Raises ``idx.IdxError`` (a ValueError) for a
  folder that is not one."""
  from wgan_gp_jax.data import idx

  folder = pathlib.Path(idx_folder).expanduser().resolve()
  pixels, labels = idx.load_idx_folder(folder)
  identity = json.dumps(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()))
  slug = re.sub(r"[^a-z0-9]+", "_", folder.name.lower()).strip("_") or "idx"
  root = default_data_dir() if data_dir is None else pathlib.Path(data_dir).expanduser()
  directory = root / f"idx_{slug}" / hashlib.sha256(identity.encode()).hexdigest()[:12] / PREPARED_VERSION
  if directory.is_dir():
    return directory
  logging.info("Preparing the %d IDX images of %s into %s", len(pixels), folder, directory)
  incomplete = directory.with_name(f"{_INCOMPLETE_PREFIX}{uuid.uuid4().hex}_{directory.name}")
  incomplete.mkdir(parents=True)
  try:
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(shape=(*pixels.shape[1:], 1), dtype=np.uint8),
        LABEL_KEY: tfds.features.ClassLabel(num_classes=int(labels.max()) + 1)})
    examples = ({"image": image[..., None], LABEL_KEY: int(label)} for image, label in zip(pixels, labels))
    write_array_record_dataset(incomplete, dataset_name=f"idx_{slug}", features=features, examples=examples,
                               examples_per_shard=_SHARD_BYTES // pixels[0].size,
                               description=f"The IDX images and labels of {folder}.")
    (incomplete / REPORT_FILENAME).write_text(json.dumps({"source": str(folder), "images_written": len(pixels)}))
    try:
      incomplete.rename(directory)
    except OSError:
      if not directory.is_dir():
        raise
  finally:
    shutil.rmtree(incomplete, ignore_errors=True)
  return directory


def prepared_features(preprocessing: images.Preprocessing) -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      "image": tfds.features.Tensor(shape=preprocessing.shape, dtype=np.uint8),
      "filename": tfds.features.Text(),
  })


def write_array_record_dataset(directory: str | os.PathLike[str], *, dataset_name: str,
                               features: tfds.features.FeaturesDict, examples: Iterable[Mapping[str, Any]],
                               examples_per_shard: int, split: str = SPLIT, description: str = "") -> int:
  """Writes `examples` as the `split` of a TFDS dataset in array_record format into `directory`; returns their count.

  The dataset's version is the name of `directory` when that is a version (TFDS's `<name>/[<config>/]<version>`
  layout), else 1.0.0.

  No TensorFlow: examples are serialized by `features` (TFDS's own tf.Example protos), written by TFDS's array_record
  file adapter, and described by `tfds.folder_dataset.write_metadata`, after which `tfds.builder_from_directory`
  (or `tfds.data_source` with the right data_dir) reads it like any downloaded TFDS dataset.
  """
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  adapter = file_adapters.ADAPTER_FOR_FORMAT[file_adapters.FileFormat.ARRAY_RECORD]
  example_iterator = iter(examples)
  shard_lengths: list[int] = []
  while True:
    shard = list(itertools.islice(example_iterator, examples_per_shard))
    if not shard:
      break
    serialized = ((None, features.serialize_example(example)) for example in shard)
    adapter.write_examples(directory / f"shard-{len(shard_lengths)}.tmp", serialized)
    shard_lengths.append(len(shard))
  for index in range(len(shard_lengths)):
    (directory / f"shard-{index}.tmp").rename(
        directory / f"{dataset_name}-{split}.array_record-{index:05d}-of-{len(shard_lengths):05d}")
  if shard_lengths:
    num_bytes = sum(file.stat().st_size for file in directory.glob(f"{dataset_name}-{split}.array_record-*"))
    split_info = tfds.core.SplitInfo(name=split, shard_lengths=shard_lengths, num_bytes=num_bytes,
                                     filename_template=None)
    tfds.folder_dataset.write_metadata(data_dir=directory, features=features, split_infos=[split_info],
                                       check_data=False, description=description)
  return sum(shard_lengths)


def format_report(report: Mapping[str, Any], *, directory: pathlib.Path | None, max_files_listed: int = 10) -> str:
  """A human-readable summary of a preparation report."""
  lines = [f"{report['source']}: {report['files']} files, {report['images_written']} images written"
           + (f" to {directory}" if directory else "")]
  for category, messages in report["skipped_files"].items():
    lines.append(f"  skipped {len(messages)} {category}:")
    lines.extend(f"    {message}" for message in messages[:max_files_listed])
    if len(messages) > max_files_listed:
      lines.append(f"    ... and {len(messages) - max_files_listed} more (see {REPORT_FILENAME})")
  return "\n".join(lines)
