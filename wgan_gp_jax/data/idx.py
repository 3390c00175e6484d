"""MNIST's IDX files (LeCun et al.: ``*-images-idx3-ubyte[.gz]`` and ``*-labels-idx1-ubyte[.gz]``), read with numpy.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), the dimensions as
big-endian 32-bit integers, then the values in C order. ``load_idx_folder`` finds one images file and one labels file
in a folder (the shared ``mnist_t10k`` holds the test set's) and checks that they agree.
"""

from __future__ import annotations

import gzip
import os
import pathlib

import numpy as np

__all__ = ["IdxError", "read_idx", "load_idx_folder"]

# IDX type codes and the numpy dtypes of their (big-endian) values.
_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
          0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class IdxError(ValueError):
  """An IDX file or folder that cannot be read as MNIST's."""


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
  """The array of an IDX file (gzipped where its name ends in ``.gz``), in native byte order.

  Raises:
    IdxError: for a file that is not IDX (wrong magic number, truncated or with trailing bytes).
  """
  path = pathlib.Path(path)
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "rb") as file:
    data = file.read()
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _TYPES:
    raise IdxError(f"{path} is not an IDX file (its magic number is {data[:4].hex() or 'missing'})")
  dtype, ndim = _TYPES[data[2]], data[3]
  header = 4 + 4 * ndim
  if len(data) < header:
    raise IdxError(f"{path}: truncated IDX header")
  shape = tuple(int(d) for d in np.frombuffer(data[4:header], ">u4"))
  expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if len(data) != expected:
    raise IdxError(f"{path}: {len(data)} bytes where an IDX array of shape {shape} takes {expected}")
  return np.frombuffer(data[header:], dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _one(folder: pathlib.Path, pattern: str, what: str) -> pathlib.Path:
  found = sorted(folder.glob(pattern))
  if len(found) != 1:
    raise IdxError(f"{folder} must hold one {what} file ({pattern}), found {[p.name for p in found] or 'none'}")
  return found[0]


def load_idx_folder(folder: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
  """The images (uint8 ``(N, H, W)``) and labels (uint8 ``(N,)``) of the one ``*images-idx3-ubyte*`` and the one
  ``*labels-idx1-ubyte*`` file of ``folder``.

  Raises:
    IdxError: where the folder is missing, holds no such pair or several, or the two files disagree.
  """
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise IdxError(f"no folder {folder}")
  images = read_idx(_one(folder, "*images-idx3-ubyte*", "images"))
  labels = read_idx(_one(folder, "*labels-idx1-ubyte*", "labels"))
  if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1 or labels.dtype != np.uint8:
    raise IdxError(f"{folder}: expected uint8 images (N, H, W) and labels (N,), got {images.dtype} {images.shape} and"
                   f" {labels.dtype} {labels.shape}")
  if len(images) != len(labels):
    raise IdxError(f"{folder}: {len(images)} images but {len(labels)} labels")
  return images, labels
