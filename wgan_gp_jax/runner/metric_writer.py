"""Where a run's numbers and pictures go: ``DIR/metrics.jsonl`` and TensorBoard event files in ``DIR/tensorboard/``.

``metrics.jsonl`` has one JSON object a line: ``step``, ``seconds`` (since this start of the run) and the metrics
(and ``fid_<N>`` where evaluated). The event files hold the same scalars, the run's speed (``speed/...``), and the
pictures drawn during training (``samples`` for image runs, ``figure`` for toy runs); ``tensorboard --logdir DIR``
shows them. They are written with tensorboardX (no TensorFlow).

A resumed run redoes the steps after its checkpoint: the lines of ``metrics.jsonl`` past it are dropped, and the
event file of the new start carries a purge step, so TensorBoard hides the old events of those steps too.

Only process 0 writes; on the others every method does nothing. The work directory may be any ``epath`` path: on a
bucket the event files are written whole at every flush (object stores have no append), and so is
``metrics.jsonl``.
"""

import io
import json
import os

import jax
import numpy as np
import tensorboardX
from etils import epath
from tensorboardX import record_writer

from wgan_gp_jax.runner import workdir as workdir_lib


class _WholeObjectFile:
  """A file on a bucket that tensorboardX writes event records into: kept in memory and written whole at each
  flush, through ``epath`` (so through the credentials and file system that every other file of the run uses)."""

  def __init__(self, path: str):
    self._path = epath.Path(path)
    self._buffer = io.BytesIO()

  def write(self, data: bytes) -> None:
    self._buffer.write(data)

  def flush(self) -> None:
    self._path.write_bytes(self._buffer.getvalue())

  def close(self) -> None:
    self.flush()


class _WholeObjectFactory:
  def open(self, path: str) -> _WholeObjectFile:
    return _WholeObjectFile(path)

  def directory_check(self, path: str) -> None:
    epath.Path(path).mkdir(parents=True, exist_ok=True)


def _use_epath_for(logdir: str) -> None:
  """Routes tensorboardX's files under ``logdir``'s URI scheme through ``epath`` (its own GCS writer needs
  google-cloud-storage, and other schemes have none)."""
  scheme = logdir.split("://", 1)[0]
  record_writer.register_writer_factory(scheme, _WholeObjectFactory())


def truncate_log(path: epath.Path, last_step: int) -> list[str]:
  """Keeps the lines of ``path`` up to ``last_step`` (those after it are redone by a resumed run); returns them."""
  if not path.exists():
    return []
  kept = []
  for line in path.read_text().splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:  # The last line of a process killed while writing it.
      continue
    if record["step"] <= last_step:
      kept.append(line + "\n")
  workdir_lib.write_text_whole(path, "".join(kept))
  return kept


class MetricWriter:
  """Writes the metrics of a run started (or resumed) at ``start_step`` into ``workdir``.

  ``tensorboard=False`` writes only ``metrics.jsonl``. Use it as a context manager, or call ``close``.
  """

  def __init__(self, workdir: epath.PathLike, *, start_step: int, tensorboard: bool = True,
               enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.workdir = workdir_lib.workdir_path(workdir)
    self.log_path = self.workdir / workdir_lib.METRICS_FILENAME
    self.tensorboard_dir = self.workdir / workdir_lib.TENSORBOARD_DIRNAME
    self._summary_writer = None
    if not self.enabled:
      return
    self._lines = truncate_log(self.log_path, start_step)
    if tensorboard:
      logdir = os.fspath(self.tensorboard_dir)
      if not workdir_lib.is_local(logdir):
        _use_epath_for(logdir)
      # The purge step hides, in TensorBoard, the events a killed start wrote past the checkpoint it resumes from.
      self._summary_writer = tensorboardX.SummaryWriter(
          logdir, purge_step=start_step + 1 if start_step else None, flush_secs=60)

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def write_scalars(self, step: int, values: dict[str, float], *, seconds: float,
                    speed: dict[str, float] | None = None) -> None:
    """One line of ``metrics.jsonl`` (``step``, ``seconds``, ``values``) and the same scalars in TensorBoard, with
    ``speed`` (steps/s...) only in TensorBoard (``metrics.jsonl`` holds what the run computes, not how fast)."""
    if not self.enabled:
      return
    line = json.dumps({"step": step, "seconds": round(seconds, 3), **values}) + "\n"
    self._lines.append(line)
    if workdir_lib.is_local(self.log_path):
      with self.log_path.open("a") as f:
        f.write(line)
    else:
      self.log_path.write_text("".join(self._lines))
    if self._summary_writer is not None:
      for name, value in values.items():
        self._summary_writer.add_scalar(name, value, step)
      for name, value in (speed or {}).items():
        self._summary_writer.add_scalar(f"speed/{name}", value, step)

  def write_image(self, step: int, name: str, image: np.ndarray) -> None:
    """A uint8 picture ``(H, W, C)`` (C 1 or 3) in TensorBoard."""
    if self.enabled and self._summary_writer is not None:
      self._summary_writer.add_image(name, np.asarray(image), step, dataformats="HWC")

  def flush(self) -> None:
    if self._summary_writer is not None:
      self._summary_writer.flush()

  def close(self) -> None:
    if self._summary_writer is not None:
      self._summary_writer.close()
      self._summary_writer = None
