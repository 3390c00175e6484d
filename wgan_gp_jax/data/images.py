"""Reading image files from a folder or a zip, and the preprocessing every image source shares.

Preprocessing (one function, `preprocess_image`, used at preparation time, at read time for TFDS datasets and by
`load_folder_images`):

1. Apply the EXIF orientation tag (phone photos store pixels sideways and a tag that says so; Pillow's
   `ImageOps.exif_transpose`).
2. Convert to 8-bit RGB (`channels=3`) or greyscale (`channels=1`, Pillow's ITU-R 601-2 luma).
3. Center-crop a square whose side is `crop` times the image's shorter side, then resize it to
   `resolution` x `resolution`. The default crop, 160/178, is the CelebA protocol of Lucic et al., "Are GANs Created
   Equal?" (NeurIPS 2018) and Kurach et al., "A Large-Scale Study of Regularization and Normalization in GANs"
   (ICML 2019), code: google/compare_gan `datasets.py` (`CelebaDataset._parse_fn`): a central 160x160 crop of the
   178x218 aligned faces, resized to 64x64. As a fraction of the shorter side it is the same crop at any scale: the
   central 80x80 of our 89x109 half-size copy, 160x160 of the full-size `img_align_celeba`. It keeps the face and
   drops most background; `crop=1.0` (the largest central square, `img[10:99]` of the half-size copy) keeps more hair
   and background, and is the right choice for already square images (MNIST, CIFAR-10, Olivetti).
4. Resize with Pillow's antialiased bicubic filter, the resize Parmar et al., "On Aliased Resizing and Surprising
   Subtleties in GAN Evaluation" (CVPR 2022) show matches an ideal antialiased resize; the bilinear resize without
   antialiasing of compare_gan aliases when shrinking 160 -> 64 or 80 -> 32.

Scaling to [-1, 1] and the random horizontal flip happen at read time (`pipeline.py`).
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import io
import json
import logging
import os
import pathlib
import zipfile
from collections.abc import Iterator
from typing import Self

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_FACE_CROP = 160 / 178
"""Side of the central square crop as a fraction of the shorter image side (Lucic et al. 2018, see module doc)."""

MAX_UPSCALE = 2.0
"""An image whose center crop needs more than this upscaling to reach the resolution is refused as too small: a
thumbnail blown up 3x or more is a blur, not a face, and would teach the critic that blur is real."""

_SUPPORTED_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})


class ImageFileError(ValueError):
  """A file that cannot be used as a training image. The message names the file and says what is wrong."""

  category: str = "unreadable"


class NotAnImageError(ImageFileError):
  category = "not_an_image"


class CorruptImageError(ImageFileError):
  category = "corrupt"


class UnsupportedImageError(ImageFileError):
  category = "unsupported"


class ImageTooSmallError(ImageFileError):
  category = "too_small"


class ImageSourceError(ValueError):
  """An image folder or zip that cannot give any image: neither a folder nor a zip, without files, or without a usable
  image (``ImageSourceNotFoundError``: missing). The message names it; the commands show it as one line."""


class ImageSourceNotFoundError(ImageSourceError, FileNotFoundError):
  """The image folder or zip does not exist."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Preprocessing:
  """What `preprocess_image` makes of an image: a `resolution` x `resolution` x `channels` uint8 array."""

  resolution: int
  crop: float = DEFAULT_FACE_CROP
  channels: int = 3

  def __post_init__(self):
    if self.resolution < 1:
      raise ValueError(f"resolution must be positive, got {self.resolution}")
    if not 0.0 < self.crop <= 1.0:
      raise ValueError(f"crop is the side of the center square as a fraction of the shorter image side, so it must be"
                       f" in (0, 1], got {self.crop}")
    if self.channels not in (1, 3):
      raise ValueError(f"channels must be 1 (greyscale) or 3 (RGB), got {self.channels}")

  @property
  def shape(self) -> tuple[int, int, int]:
    return (self.resolution, self.resolution, self.channels)

  def to_json(self) -> dict[str, int | float]:
    return dataclasses.asdict(self)


def center_crop_box(width: int, height: int, *, crop: float) -> tuple[int, int, int, int]:
  """(left, top, right, bottom) of the central square whose side is `crop` times the shorter side (at least 1)."""
  side = max(1, round(crop * min(width, height)))
  left = (width - side) // 2
  top = (height - side) // 2
  return (left, top, left + side, top + side)


def check_large_enough(width: int, height: int, preprocessing: Preprocessing, *,
                       name: str) -> tuple[int, int, int, int]:
  """Returns the center crop box of a `width` x `height` image, or raises `ImageTooSmallError` (see `MAX_UPSCALE`)."""
  box = center_crop_box(width, height, crop=preprocessing.crop)
  crop_side = box[2] - box[0]
  if crop_side * MAX_UPSCALE < preprocessing.resolution:
    raise ImageTooSmallError(
        f"{name}: image is too small ({width}x{height}): its {crop_side}x{crop_side} center crop"
        f" (crop={preprocessing.crop:.4g} of the shorter side) would need more than {MAX_UPSCALE:g}x upscaling to"
        f" reach {preprocessing.resolution}x{preprocessing.resolution}")
  return box


def decode_image(data: bytes, *, name: str) -> Image.Image:
  """Decodes an encoded image completely (so truncation shows up here, not later) or raises `ImageFileError`."""
  if not data:
    raise NotAnImageError(f"{name}: empty file")
  try:
    image = Image.open(io.BytesIO(data))
  except UnidentifiedImageError:
    raise NotAnImageError(f"{name}: not an image file Pillow can read ({len(data)} bytes)") from None
  except (OSError, ValueError, SyntaxError) as error:
    raise CorruptImageError(f"{name}: cannot read the image header: {error}") from error
  try:
    image.load()
  except Exception as error:  # Pillow's decoders raise OSError, ValueError, SyntaxError, struct.error, ...
    raise CorruptImageError(f"{name}: corrupt or truncated {image.format} image: {error}") from error
  return image


def preprocess_image(image: Image.Image, preprocessing: Preprocessing, *, name: str) -> np.ndarray:
  """Orients, converts, center-crops and resizes `image` into a uint8 array of shape `preprocessing.shape`.

  See the module docstring for the steps and their sources. Raises `ImageFileError` naming `name` for a pixel format
  that has no faithful 8-bit conversion (16-bit or float images) and for an image too small for its crop.
  """
  if image.mode not in _SUPPORTED_MODES:
    raise UnsupportedImageError(f"{name}: pixel mode {image.mode!r} (e.g. 16-bit or float) is not supported; save it"
                                " as 8-bit greyscale or RGB")
  image = ImageOps.exif_transpose(image)
  image = image.convert("RGB" if preprocessing.channels == 3 else "L")
  box = check_large_enough(image.width, image.height, preprocessing, name=name)
  size = (preprocessing.resolution, preprocessing.resolution)
  pixels = np.asarray(image.resize(size, resample=Image.Resampling.BICUBIC, box=box), dtype=np.uint8)
  return pixels.reshape(preprocessing.shape)


def preprocess_array(pixels: np.ndarray, preprocessing: Preprocessing, *, name: str) -> np.ndarray:
  """`preprocess_image` for a decoded uint8 array of shape (H, W) or (H, W, 1|3), e.g. a TFDS record's image."""
  if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[-1] not in (1, 3)):
    raise UnsupportedImageError(f"{name}: expected a uint8 image of shape (H, W), (H, W, 1) or (H, W, 3), got"
                                f" {pixels.dtype} {pixels.shape}")
  if pixels.shape == preprocessing.shape and preprocessing.crop == 1.0:
    return pixels
  image = Image.fromarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels)
  return preprocess_image(image, preprocessing, name=name)


class ImageSource(abc.ABC):
  """The files of a folder (recursively) or of a zip archive, in sorted order of their relative names.

  Hidden files and folders (names starting with '.', e.g. `.DS_Store`) and macOS's `__MACOSX/` zip metadata are not
  listed: they are never images a user meant to include.
  """

  def __init__(self, path: pathlib.Path, names: list[str]):
    self.path = path
    self.names = names

  @staticmethod
  def open(path: str | os.PathLike[str]) -> "ImageSource":
    path = pathlib.Path(path).expanduser().resolve()
    if path.is_dir():
      return FolderSource(path)
    if path.is_file():
      if not zipfile.is_zipfile(path):
        raise ImageSourceError(f"{path}: an image source must be a folder or a .zip archive of images; this file is"
                               " neither")
      return ZipSource(path)
    raise ImageSourceNotFoundError(f"image folder or zip not found: {path}")

  @abc.abstractmethod
  def read(self, name: str) -> bytes:
    """The bytes of file `name` (one of `self.names`)."""

  @abc.abstractmethod
  def _file_identities(self) -> list[tuple[str, int, int]]:
    """(name, size, version) for each file, where version changes when the content does."""

  def fingerprint(self) -> str:
    """A hash of where the source is and of each file's name, size and content version (mtime, or zip CRC)."""
    identity = {"path": str(self.path), "files": self._file_identities()}
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()

  def close(self) -> None:
    pass

  def __enter__(self) -> Self:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def describe(self, name: str) -> str:
    """How messages name file `name`: its path, or `archive.zip:member`."""
    return f"{self.path}/{name}" if isinstance(self, FolderSource) else f"{self.path}:{name}"


def _is_hidden(relative_name: str) -> bool:
  parts = relative_name.split("/")
  return parts[0] == "__MACOSX" or any(part.startswith(".") for part in parts)


class FolderSource(ImageSource):

  def __init__(self, path: pathlib.Path):
    names = sorted(
        relative for relative in (file.relative_to(path).as_posix() for file in path.rglob("*") if file.is_file())
        if not _is_hidden(relative))
    super().__init__(path, names)

  def read(self, name: str) -> bytes:
    try:
      return (self.path / name).read_bytes()
    except OSError as error:
      raise ImageFileError(f"{self.describe(name)}: cannot read the file: {error}") from error

  def _file_identities(self) -> list[tuple[str, int, int]]:
    stats = ((name, (self.path / name).stat()) for name in self.names)
    return [(name, stat.st_size, stat.st_mtime_ns) for name, stat in stats]


class ZipSource(ImageSource):

  def __init__(self, path: pathlib.Path):
    self._zip = zipfile.ZipFile(path)
    self._infos = {info.filename: info for info in self._zip.infolist()
                   if not info.is_dir() and not _is_hidden(info.filename)}
    super().__init__(path, sorted(self._infos))

  def read(self, name: str) -> bytes:
    try:
      return self._zip.read(self._infos[name])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as error:
      raise CorruptImageError(f"{self.describe(name)}: cannot extract it from the zip: {error}") from error

  def _file_identities(self) -> list[tuple[str, int, int]]:
    return [(name, info.file_size, info.CRC) for name, info in self._infos.items()]

  def close(self) -> None:
    self._zip.close()


def iter_preprocessed(source: ImageSource, preprocessing: Preprocessing, *,
                      names: list[str] | None = None) -> Iterator[tuple[str, np.ndarray | ImageFileError]]:
  """Yields (name, uint8 image) for each usable file of `source`, or (name, error) for each file that is not."""
  for name in source.names if names is None else names:
    described = source.describe(name)
    try:
      yield name, preprocess_image(decode_image(source.read(name), name=described), preprocessing, name=described)
    except ImageFileError as error:
      yield name, error


def load_folder_images(path: str | os.PathLike[str], *, resolution: int, crop: float = DEFAULT_FACE_CROP,
                       channels: int = 3, limit: int | None = None) -> np.ndarray:
  """The images of a folder or zip, preprocessed as for training, as uint8 of shape (N, resolution, resolution, C).

  Files are taken in sorted order of their relative names; unusable files (not an image, corrupt, too small) are
  skipped with a warning naming them, as preparation does. `limit` stops after that many usable images.
  Raises ``ImageSourceError`` (a ValueError) if no file is usable, ``ImageSourceNotFoundError`` (also a
  FileNotFoundError) if `path` does not exist.
  """
  preprocessing = Preprocessing(resolution=resolution, crop=crop, channels=channels)
  images, errors = [], []
  with ImageSource.open(path) as source:
    for _, result in iter_preprocessed(source, preprocessing):
      if isinstance(result, ImageFileError):
        errors.append(result)
        continue
      images.append(result)
      if limit is not None and len(images) >= limit:
        break
    if errors:
      logging.warning("load_folder_images skipped %d unusable files of %s, first: %s", len(errors), source.path,
                      "; ".join(str(error) for error in errors[:5]))
    if not images:
      raise ImageSourceError(f"no usable image in {source.path} ({len(source.names)} files"
                             + (f", all unusable, first: {errors[0]}" if errors else "") + ")")
  return np.stack(images)
