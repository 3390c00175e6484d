"""What a run's work directory holds, by name, and how to reach it on any path ``etils.epath`` handles: local
folders, and buckets (``gs://``, ``s3://``).

Layout of a work directory DIR (every name is a constant or function of this module)::

  DIR/config.json          the config of the latest start (each checkpoint also holds the config it was made with)
  DIR/checkpoints/<step>/  orbax checkpoints: items ``state/``, ``config/`` and, for image runs, ``data_position/``
                           (older versions' checkpoints have ``data/``, one grain JSON per process; ``checkpoint``)
  DIR/metrics.jsonl        one JSON line of metrics every ``logging.log_every`` steps (and ``fid_<N>`` where evaluated)
  DIR/tensorboard/         TensorBoard event files: the same scalars, the speed, the pictures (``metric_writer``)
  DIR/best_checkpoint/     image runs with ``evaluation.every``: the checkpoint of the best FID, one ``<step>/`` in the
                           format of ``checkpoints/``, and ``best.json`` (``{"step", "metric", "value"}``, written once
                           that checkpoint is complete; ``periodic_eval``)
  DIR/figures/             toy runs: real points, samples and critic contours, ``step_<step, 6 digits>.png``
  DIR/samples/             image runs: grids from a fixed latent batch, ``step_<step, 6 digits>.png``
  DIR/unreadable_checkpoints/  checkpoints that could not be read, set aside as ``<step>-<time>`` (``checkpoint``)
  DIR/lock.json            the live trainer that holds the directory (``workdir_lock``)
  DIR/evaluation.json      ``experiments.evaluate``'s results for the latest checkpoint; ``evaluation_step_<step>.json``
                           for a kept one (``--step``); ``_raw`` before ``.json`` for the raw generator of a run that
                           keeps an EMA (``--noema``)

Checkpoints go through orbax, which takes the same paths; everything else a run writes (config, logs, pictures,
evaluation files) goes through ``epath``. Object stores have no append and no atomic rename, but an object appears
whole once written, so files are replaced by writing them whole: on a local disk through a temporary file and a
rename, in a bucket directly.
"""

import json
import os
import re

import numpy as np
from etils import epath

CONFIG_FILENAME = "config.json"
CHECKPOINTS_DIRNAME = "checkpoints"
# The items of a checkpoint: the training state, its config, and the training data's position (image runs); older
# checkpoints hold one data item per process instead.
STATE_ITEM = "state"
CONFIG_ITEM = "config"
DATA_POSITION_ITEM = "data_position"
LEGACY_DATA_ITEM = "data"
METRICS_FILENAME = "metrics.jsonl"
TENSORBOARD_DIRNAME = "tensorboard"
BEST_CHECKPOINT_DIRNAME = "best_checkpoint"
BEST_RECORD_FILENAME = "best.json"  # in BEST_CHECKPOINT_DIRNAME
EVALUATION_PLAN_FILENAME = "evaluation_plan.json"
FIGURES_DIRNAME = "figures"
SAMPLES_DIRNAME = "samples"
UNREADABLE_CHECKPOINTS_DIRNAME = "unreadable_checkpoints"
LOCK_FILENAME = "lock.json"

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_EVALUATED_STEP = re.compile(r"evaluation_step_(\d+)\.json")


def picture_filename(step: int) -> str:
  """The name of the picture drawn at generator ``step``, in ``FIGURES_DIRNAME`` or ``SAMPLES_DIRNAME``."""
  return f"step_{step:06d}.png"


def evaluation_filename(step: int | None = None, *, raw_of_ema_run: bool = False) -> str:
  """The file ``experiments.evaluate`` writes its results to in the run's folder.

  ``evaluation.json`` for the latest checkpoint, ``evaluation_step_<STEP>.json`` for a kept one; ``_raw`` is added when
  the raw generator of a run that keeps an EMA is scored (``--noema``), so that it never replaces the EMA's results.
  """
  name = "evaluation" if step is None else f"evaluation_step_{step}"
  return f"{name}{'_raw' if raw_of_ema_run else ''}.json"


def metric_curve(workdir: epath.PathLike, metric: str) -> tuple[np.ndarray, np.ndarray]:
  """``(steps, values)`` of ``metric`` in the run's ``metrics.jsonl`` (the steps that have it)."""
  lines = (epath.Path(workdir) / METRICS_FILENAME).read_text().splitlines()
  points = [(record["step"], record[metric]) for record in map(json.loads, filter(None, lines)) if metric in record]
  return np.array([step for step, _ in points], np.int64), np.array([value for _, value in points], np.float64)


def evaluated_curve(workdir: epath.PathLike, metric: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
  """``{num_samples: (steps, values)}`` of ``metric`` in the run's ``evaluation_step_<STEP>.json`` files (written by
  ``experiments.evaluate --step``; the raw generator's ``_raw`` files are left out), one curve per number of samples
  (FID depends on it)."""
  curves: dict[int, list[tuple[int, float]]] = {}
  for path in epath.Path(workdir).glob("evaluation_step_*.json"):
    matched = _EVALUATED_STEP.fullmatch(path.name)
    if not matched:  # The raw generator's scores.
      continue
    record = json.loads(path.read_text())
    if metric in record:
      curves.setdefault(record["num_samples"], []).append((int(matched.group(1)), record[metric]))
  return {num: (np.array([step for step, _ in sorted(points)], np.int64),
                np.array([value for _, value in sorted(points)], np.float64))
          for num, points in sorted(curves.items())}


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
