"""Work directories on any path ``etils.epath`` handles: local folders, and buckets (``gs://``, ``s3://``).

Checkpoints go through orbax, which takes the same paths; everything else a run writes (config, logs, pictures,
evaluation files) goes through ``epath``. Object stores have no append and no atomic rename, but an object appears
whole once written, so files are replaced by writing them whole: on a local disk through a temporary file and a
rename, in a bucket directly.
"""

import os
import re

from etils import epath

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_local(path: epath.PathLike) -> bool:
  """True for a path on a local (or mounted) file system, False for a URI such as ``gs://bucket/run``."""
  return not _URI.match(os.fspath(path))


def workdir_path(path: epath.PathLike) -> epath.Path:
  """``path`` as an ``epath.Path``, made absolute when local (orbax needs absolute paths)."""
  if is_local(path):
    return epath.Path(os.path.abspath(os.fspath(path)))
  return epath.Path(path)


def write_bytes_whole(path: epath.Path, data: bytes) -> None:
  """Writes ``data`` so that a reader sees the old content or the new, never a part."""
  if not is_local(path):
    path.write_bytes(data)
    return
  tmp = path.parent / f".{path.name}.tmp"
  tmp.write_bytes(data)
  tmp.replace(path)


def write_text_whole(path: epath.Path, text: str) -> None:
  write_bytes_whole(path, text.encode())
