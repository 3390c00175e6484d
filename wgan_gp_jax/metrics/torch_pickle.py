"""Read the tensors of a PyTorch ``.pt`` / ``.pth`` file with numpy, without executing its pickle.

A file written by ``torch.save`` (or a TorchScript archive from ``torch.jit.save``) is either

* a zip archive: ``<prefix>/data.pkl`` (a pickle that names the tensors) and one raw little-endian
  storage per tensor at ``<prefix>/data/<key>``; or
* the legacy stream (``_use_new_zipfile_serialization=False``): five pickles (magic number, protocol,
  system info, the object, the list of storage keys) followed by each storage as an int64 element
  count and its raw bytes.

The pickles are read by a restricted :class:`pickle.Unpickler` whose ``find_class`` resolves only
the handful of globals that describe tensors (``torch._utils._rebuild_tensor_v2`` and friends, the
``torch.*Storage`` dtype markers, ``collections.OrderedDict``), each mapped to an inert numpy-side
stand-in; TorchScript module classes (``__torch__.*``) become plain attribute dictionaries. Any other
global raises :class:`pickle.UnpicklingError`, so no code from the file runs.

References:
  PyTorch serialization format, https://pytorch.org/docs/stable/notes/serialization.html
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, Callable

import numpy as np

__all__ = ["load_torch_file", "flatten_arrays"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
  "FloatStorage": np.float32,
  "DoubleStorage": np.float64,
  "HalfStorage": np.float16,
  "LongStorage": np.int64,
  "IntStorage": np.int32,
  "ShortStorage": np.int16,
  "CharStorage": np.int8,
  "ByteStorage": np.uint8,
  "BoolStorage": np.bool_,
}


class _StorageType:
  """Stand-in for ``torch.FloatStorage`` & co.: it only carries the numpy dtype."""

  def __init__(self, dtype: type):
    self.dtype = np.dtype(dtype)


class _StorageRef:
  """A storage named by the pickle; its bytes are attached after unpickling."""

  def __init__(self, key: str, dtype: np.dtype, numel: int):
    self.key, self.dtype, self.numel = key, dtype, numel
    self.data: np.ndarray | None = None


class _TensorRef:
  """What ``_rebuild_tensor_v2`` returns here: a strided view description, materialized later."""

  def __init__(self, storage: _StorageRef, offset: int, size: tuple, stride: tuple):
    self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

  def to_numpy(self) -> np.ndarray:
    flat = self.storage.data
    if flat is None:
      raise pickle.UnpicklingError(f"storage {self.storage.key!r} was named but never stored")
    if not self.size:
      return flat[self.offset].copy()
    extent = self.offset + 1 + sum((n - 1) * s for n, s in zip(self.size, self.stride))
    if min(self.size) > 0 and extent > flat.size:
      raise pickle.UnpicklingError(f"tensor view runs past storage {self.storage.key!r}")
    view = np.lib.stride_tricks.as_strided(
      flat[self.offset:], shape=self.size, strides=[s * flat.itemsize for s in self.stride])
    return np.array(view)


class _ScriptObject:
  """Stand-in for a TorchScript module class (``__torch__.*``): keeps its attribute dict."""

  def __setstate__(self, state: Any) -> None:
    self.state = state


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None) -> _TensorRef:
  del requires_grad, backward_hooks, metadata
  if not isinstance(storage, _StorageRef):
    raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
  return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  del requires_grad, backward_hooks
  return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
  ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
  ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
  ("torch.jit._pickle", "build_intlist"): list,
  ("torch.jit._pickle", "build_doublelist"): list,
  ("torch.jit._pickle", "build_boollist"): list,
  ("collections", "OrderedDict"): collections.OrderedDict,
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only the tensor-describing globals above; every other global is refused."""

  def __init__(self, file, persistent_load: Callable[[Any], Any] | None = None):
    super().__init__(file)
    self._persistent = persistent_load

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in _ALLOWED_GLOBALS:
      return _ALLOWED_GLOBALS[(module, name)]
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(_STORAGE_DTYPES[name])
    if module == "__torch__" or module.startswith("__torch__."):
      return _ScriptObject
    raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a torch file")

  def persistent_load(self, pid: Any) -> Any:
    if self._persistent is None:
      raise pickle.UnpicklingError("unexpected persistent id in a torch file header")
    return self._persistent(pid)


def _storage_from_pid(pid: Any, storages: dict[str, _StorageRef]) -> _StorageRef:
  # zip: ('storage', type, key, location, numel); legacy: the same plus view_metadata.
  if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
    raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
  storage_type, key, _, numel = pid[1:5]
  if not isinstance(storage_type, _StorageType):
    raise pickle.UnpicklingError(f"unsupported storage type in {pid!r}")
  key = str(key)
  if key not in storages:
    storages[key] = _StorageRef(key, storage_type.dtype, int(numel))
  return storages[key]


def _materialize(obj: Any) -> Any:
  if isinstance(obj, _TensorRef):
    return obj.to_numpy()
  if isinstance(obj, _ScriptObject):
    return _materialize(getattr(obj, "state", {}))
  if isinstance(obj, dict):
    return type(obj)((k, _materialize(v)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialize(v) for v in obj)
  return obj


def _load_zip(path: str | os.PathLike) -> Any:
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
      raise ValueError(f"{path}: expected one <prefix>/data.pkl in the torch zip, found {pickles}")
    prefix = pickles[0][: -len("data.pkl")]
    storages: dict[str, _StorageRef] = {}
    unpickler = _RestrictedUnpickler(
      io.BytesIO(archive.read(pickles[0])), lambda pid: _storage_from_pid(pid, storages))
    obj = unpickler.load()
    for key, ref in storages.items():
      raw = archive.read(f"{prefix}data/{key}")
      ref.data = np.frombuffer(raw, dtype=ref.dtype.newbyteorder("<"), count=ref.numel)
  return _materialize(obj)


def _load_legacy(path: str | os.PathLike) -> Any:
  with open(path, "rb") as f:
    if _RestrictedUnpickler(f).load() != _LEGACY_MAGIC:
      raise ValueError(f"{path}: not a torch file (neither a zip archive nor the legacy format)")
    _RestrictedUnpickler(f).load()  # protocol version
    sys_info = _RestrictedUnpickler(f).load()
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
      raise ValueError(f"{path}: big-endian torch files are not supported")
    storages: dict[str, _StorageRef] = {}
    obj = _RestrictedUnpickler(f, lambda pid: _storage_from_pid(pid, storages)).load()
    keys = _RestrictedUnpickler(f).load()
    for key in keys:
      (numel,) = struct.unpack("<q", f.read(8))
      ref = storages[str(key)]
      raw = f.read(numel * ref.dtype.itemsize)
      ref.data = np.frombuffer(raw, dtype=ref.dtype.newbyteorder("<"), count=numel)
  return _materialize(obj)


def load_torch_file(path: str | os.PathLike) -> Any:
  """Loads a ``torch.save`` / ``torch.jit.save`` file into nested dicts and lists of numpy arrays.

  Nothing in the file is executed: see the module docstring for the restricted unpickler.

  Args:
    path: a ``.pt`` / ``.pth`` file (zip archive or legacy stream).

  Returns:
    The saved object with every tensor replaced by a numpy array and every TorchScript module by
    the dict of its attributes (submodules, parameters, ints and lists such as ``stride``).

  Raises:
    FileNotFoundError: where ``path`` does not exist.
    pickle.UnpicklingError: where the pickle names a global other than the tensor ones.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"torch file not found: {path}")
  if zipfile.is_zipfile(path):
    return _load_zip(path)
  return _load_legacy(path)


def flatten_arrays(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
  """Flattens nested dicts of arrays into ``{"a.b.c": array}``, dropping every non-array leaf."""
  flat: dict[str, np.ndarray] = {}
  if isinstance(tree, np.ndarray):
    flat[prefix] = tree
  elif isinstance(tree, dict):
    for key, value in tree.items():
      flat.update(flatten_arrays(value, f"{prefix}.{key}" if prefix else str(key)))
  return flat
