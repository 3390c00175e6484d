"""Checkpoints of a run: what they hold, how they are written, and how a run comes back from them.

A checkpoint ``DIR/checkpoints/<step>/`` holds three items, none of them pickled:

  state/   the ``TrainState`` (parameters, batch-norm statistics, both optimizer states, the step and the PRNG key
           data), written collectively by all processes with orbax's ``StandardSave`` (tensorstore, no pickle)
  config/  the config the state was made with, as JSON
  data_position/  image runs: the position in the training data, as JSON (the same on every process, so a run can
           resume on another number of processes; checkpoints of older versions have ``data/``, one grain JSON
           per process, and resume on the same number of processes only)

Saves are asynchronous (the step loop goes on while the files are written) and atomic: orbax writes into a
temporary directory and renames it to ``<step>`` once every file is there, so a save cut short by ``kill -9`` leaves
only a temporary directory, which is never taken for a checkpoint and is removed on the next start.

A checkpoint that cannot be read (truncated or missing files) is reported and skipped: the run resumes from the
newest readable one, and the unreadable ones are moved to ``DIR/unreadable_checkpoints/`` so that the run can save
those steps again.
"""

import json
import logging
import pathlib
import shutil
import time
from collections.abc import Callable, Mapping
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from wgan_gp_jax import configuration, objectives
from wgan_gp_jax.runner import workdir as workdir_lib

# Config keys that may differ between a checkpoint and the config that resumes it: how long the run goes, how often
# it reports, evaluates and saves, how many devices share the work, where prepared data is cached, and how the layers
# are computed. Any other difference (the model, the optimizer, the data, the seed...) would silently make a different
# run, and is refused.
RESUMABLE_CHANGES = frozenset({
    "num_steps", "logging.log_every", "logging.figure_every", "logging.num_fixed_samples", "checkpoint.every",
    "checkpoint.keep", "checkpoint.keep_period", "checkpoint.lock_stale_seconds", "num_devices", "data.data_dir",
    "evaluation.every", "evaluation.num_samples", "evaluation.reference", "evaluation.max_time_fraction", "model.kernels",
})
# Keys added to the config after checkpoints were made without them, with the value that does what those checkpoints'
# runs did: a checkpoint's config that lacks one is read as having it.
ADDED_KEYS = {"model.dtype": "float32", "model.param_dtype": "float32", "model.kernels": "auto",
              "model.critic_norm": "auto", "model.num_classes": 0, "objective.acgan_scale": 1.0,
              "objective.acgan_scale_g": 0.1}
ADDED_IMAGE_KEYS = {"data.held_out": 0, "data.idx_folder": ""}  # added to image runs' configs only
# Values renamed since checkpoints were made with them, per key: a saved and a requested config are compared by the
# current names, so that a run resumes under either.
RENAMED_VALUES = {"objective.name": objectives.RENAMED}
# The last commit whose checkpoints hold a config without groups (``learning_rate`` rather than
# ``critic.learning_rate``): checkpoints it made are refused by ``check_config_format``, and left as they are.
LAST_FLAT_CONFIG_COMMIT = "53f4924"

_MIB = 2**20
# Room for the logs and pictures of a run, on top of its checkpoints.
_FREE_SPACE_MARGIN = 64 * _MIB


class ConfigMismatchError(ValueError):
  """The config of a resumed run differs from its checkpoint's in keys outside ``RESUMABLE_CHANGES``."""


class CheckpointError(RuntimeError):
  """No checkpoint of a run can be read, or its work directory cannot hold checkpoints."""


class ProcessCountError(CheckpointError):
  """A checkpoint of an older version that can be resumed only on the number of processes that made it."""


def config_as_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as the plain JSON values a checkpoint stores (tuples become lists, placeholders None)."""
  return json.loads(config.to_json(sort_keys=True))


def _with_current_names(flat: Mapping[str, Any]) -> dict[str, Any]:
  return {key: RENAMED_VALUES[key].get(value, value) if key in RENAMED_VALUES else value for key, value in flat.items()}


def config_differences(saved: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
  """One line per key outside ``RESUMABLE_CHANGES`` whose value differs (a renamed value and its current name do
  not, ``RENAMED_VALUES``), sorted by key."""
  saved = _with_current_names(configuration.dotted_items(saved))
  requested = _with_current_names(configuration.dotted_items(requested))
  missing = object()

  def describe(value: Any) -> str:
    return "absent" if value is missing else repr(value)

  lines = []
  for key in sorted(saved.keys() | requested.keys()):
    before, after = saved.get(key, missing), requested.get(key, missing)
    if key not in RESUMABLE_CHANGES and before != after:
      lines.append(f"{key}: {describe(before)} in the checkpoint, {describe(after)} now")
  return lines


def check_config_format(saved: Mapping[str, Any], *, step: int, directory: pathlib.Path) -> None:
  """Raises ``ConfigMismatchError`` for a checkpoint made before configs had groups (objectives, EMA, augmentation).

  Such a checkpoint's state has no EMA fields; rather than guess how its flat keys
  map to today's groups, it is refused, and kept, with the commit that can still read it.
  """
  if not isinstance(saved.get("objective"), Mapping):
    raise ConfigMismatchError(
        f"the checkpoint at step {step} in {directory} was made by an earlier wgan_gp_jax whose config had no groups"
        f" (it has 'learning_rate' where this version has 'critic.learning_rate'), and this version cannot read it."
        f" It is left as it is: sample from it with the code of commit {LAST_FLAT_CONFIG_COMMIT} (git checkout"
        f" {LAST_FLAT_CONFIG_COMMIT}), or train again in a new work directory.")


def with_added_keys(saved: Mapping[str, Any]) -> dict[str, Any]:
  """A checkpoint's config with every key of ``ADDED_KEYS`` (and of an image run's ``ADDED_IMAGE_KEYS``) that it lacks
  set to its value there."""
  saved = json.loads(json.dumps(saved))
  present = configuration.dotted_items(saved)
  added = ADDED_KEYS | (ADDED_IMAGE_KEYS if saved.get("kind") == "image" else {})
  for key, value in added.items():
    if key not in present:
      configuration.set_dotted(saved, key, value)
  return saved


def check_can_resume(saved: Mapping[str, Any], requested: Mapping[str, Any], *, step: int,
                     directory: pathlib.Path) -> None:
  """Raises ``ConfigMismatchError`` naming every key that may not change between a checkpoint and its resumption."""
  differences = config_differences(saved, requested)
  if differences:
    raise ConfigMismatchError(
        f"cannot resume from the checkpoint at step {step} in {directory}: it was made with a different config.\n  "
        + "\n  ".join(differences)
        + f"\nOnly {', '.join(sorted(RESUMABLE_CHANGES))} may change when a run resumes;"
        " train a different config in a new work directory.")


def check_workdir(workdir: pathlib.Path, *, checkpoint_bytes: int, keep_checkpoints: int) -> None:
  """Raises ``CheckpointError`` now, before any training step, if ``workdir`` cannot hold this run's checkpoints.

  At its peak a run holds ``keep_checkpoints`` checkpoints and the one being written; those already there count. A
  bucket (``gs://``) has no free space to check.
  """
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / f".write_probe_{jax.process_index()}"
    probe.write_bytes(b"\0" * 4096)
    probe.unlink()
  except OSError as error:
    raise CheckpointError(f"cannot write to the work directory {workdir}: {error.strerror or error}") from error
  if not workdir_lib.is_local(workdir):
    return
  checkpoints_dir = workdir / workdir_lib.CHECKPOINTS_DIRNAME
  existing = sum(path.name.isdigit() for path in checkpoints_dir.iterdir()) if checkpoints_dir.is_dir() else 0
  more = max(1, keep_checkpoints + 1 - existing)
  needed = more * checkpoint_bytes + _FREE_SPACE_MARGIN
  free = shutil.disk_usage(workdir).free
  if free < needed:
    raise CheckpointError(
        f"not enough free space for the checkpoints in {workdir}: {free / _MIB:.1f} MiB free, this run needs about"
        f" {needed / _MIB:.1f} MiB ({more} more checkpoint(s) of {checkpoint_bytes / _MIB:.1f} MiB, and"
        f" {_FREE_SPACE_MARGIN // _MIB} MiB for logs and pictures)")


def state_bytes(abstract_state: Any) -> int:
  return sum(int(np.prod(leaf.shape)) * leaf.dtype.itemsize for leaf in jax.tree.leaves(abstract_state))


def _all_processes_agree(ok: bool) -> bool:
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.array(ok))))


class Checkpoints:
  """The checkpoints of one run in ``workdir/checkpoints``.

  ``read_only`` opens them for reading alongside a run that may still be training: nothing is written, cleaned up
  or moved.
  """

  def __init__(self, workdir: pathlib.Path, *, keep: int | None = None, keep_period: int = 0,
               read_only: bool = False, directory_name: str = workdir_lib.CHECKPOINTS_DIRNAME):
    self.workdir = workdir
    self.directory = workdir / directory_name
    if read_only:
      options = ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, create=False)
    else:
      options = ocp.CheckpointManagerOptions(
          max_to_keep=keep,
          keep_period=keep_period or None,  # never deletes the checkpoints at multiples of it
          enable_async_checkpointing=True,
          # What a save cut short by kill -9 leaves behind; never taken for a checkpoint either way.
          cleanup_tmp_directories=True,
      )
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    self._read_only = read_only

  def __enter__(self) -> "Checkpoints":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, config: ml_collections.ConfigDict,
           data_iterator: grain.DatasetIterator | None = None) -> None:
    """Starts writing a checkpoint and returns once the state is copied off the devices; the files follow.

    Every process calls it. It first waits for the previous save to be complete.
    """
    items = {workdir_lib.STATE_ITEM: ocp.args.StandardSave(state),
             workdir_lib.CONFIG_ITEM: ocp.args.JsonSave(config_as_json(config))}
    if data_iterator is not None:
      # The same on every process (``data.pipeline``): written once, readable by any number of processes.
      items[workdir_lib.DATA_POSITION_ITEM] = ocp.args.JsonSave(
          {"iterator": data_iterator.get_state(), "process_count": jax.process_count()})
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

  def restore_latest(
      self,
      abstract_state: Callable[[ml_collections.ConfigDict], Any],
      *,
      requested_config: ml_collections.ConfigDict | None = None,
      data_iterator: grain.DatasetIterator | None = None,
      step: int | None = None,
  ) -> tuple[int, Any, ml_collections.ConfigDict] | None:
    """``(step, state, config)`` of the newest readable checkpoint, or None when there is none.

    ``abstract_state(config)`` gives the structure, shapes, dtypes and shardings of the state that a checkpoint made
    with ``config`` holds. With ``requested_config``, a
    checkpoint made with an incompatible config is refused (``ConfigMismatchError``). With ``data_iterator``, its
    position is restored too. Unreadable newer checkpoints are logged and, unless read-only, moved aside. With
    ``step``, only the checkpoint at that step is considered (``FileNotFoundError`` if there is none).
    """
    steps = self.steps()
    if step is not None:
      if step not in steps:
        raise FileNotFoundError(f"no checkpoint at step {step} in {self.directory}; there are steps {steps}")
      steps = [step]
    unreadable: dict[int, str] = {}
    for step in reversed(steps):
      saved_config, problem = self._try(lambda: self._read_config(step))
      if not _all_processes_agree(problem is None):
        unreadable[step] = problem or "another process cannot read it"
        continue
      check_config_format(saved_config, step=step, directory=self.directory)
      saved_config = with_added_keys(saved_config)
      if requested_config is not None:
        check_can_resume(saved_config, config_as_json(requested_config), step=step, directory=self.directory)
      saved_config = ml_collections.ConfigDict(saved_config)
      state, problem = self._try(lambda: self._read_state(step, abstract_state(saved_config), data_iterator))
      if not _all_processes_agree(problem is None):
        unreadable[step] = problem or "another process cannot read it"
        continue
      self._set_aside(unreadable, fallback=step)
      return step, state, saved_config
    if unreadable:
      raise CheckpointError(
          f"none of the checkpoints in {self.directory} can be read:\n  "
          + "\n  ".join(f"step {step}: {problem}" for step, problem in unreadable.items()))
    return None

  @staticmethod
  def _try(read) -> tuple[Any, str | None]:
    try:
      return read(), None
    except ProcessCountError:
      raise
    except Exception as error:  # Orbax and tensorstore raise many types for missing or truncated files.
      return None, f"{type(error).__name__}: {error}"

  def _read_config(self, step: int) -> dict[str, Any]:
    restore = ocp.args.Composite(**{workdir_lib.CONFIG_ITEM: ocp.args.JsonRestore()})
    saved = self._manager.restore(step, args=restore)[workdir_lib.CONFIG_ITEM]
    if not isinstance(saved, dict):
      raise ValueError(f"its config is a {type(saved).__name__}, not a JSON object")
    return saved

  def _read_state(self, step: int, abstract_state: Any, data_iterator: grain.DatasetIterator | None) -> Any:
    items = {workdir_lib.STATE_ITEM: ocp.args.StandardRestore(abstract_state)}
    if data_iterator is None:
      return self._manager.restore(step, args=ocp.args.Composite(**items))[workdir_lib.STATE_ITEM]
    if not (self.directory / str(step) / workdir_lib.DATA_POSITION_ITEM).exists():
      return self._read_state_with_per_process_data(step, items, data_iterator)
    items[workdir_lib.DATA_POSITION_ITEM] = ocp.args.JsonRestore()
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    position = restored[workdir_lib.DATA_POSITION_ITEM]
    if position["process_count"] != jax.process_count():
      logging.info("the checkpoint at step %d was written by %d process(es) and this run has %d: the data continues"
                   " at the same global batch, with the same examples in the same order", step,
                   position["process_count"], jax.process_count())
    data_iterator.set_state(position["iterator"])
    return restored[workdir_lib.STATE_ITEM]

  def _read_state_with_per_process_data(self, step: int, items: dict, data_iterator: grain.DatasetIterator) -> Any:
    """Checkpoints made before the data position was process-count-free hold one data file per process."""
    saved = sorted(path.name for path in
                   (self.directory / str(step) / workdir_lib.LEGACY_DATA_ITEM).glob("process_*.json"))
    if saved and f"process_{jax.process_index()}-of-{jax.process_count()}.json" not in saved:
      counts = sorted({name.rsplit("-of-", 1)[1].removesuffix(".json") for name in saved})
      raise ProcessCountError(
          f"the checkpoint at step {step} in {self.directory} holds the data positions of {', '.join(counts)}"
          f" process(es) (a checkpoint of an older version) and this run has {jax.process_count()}: resume it with"
          " that many processes, or start a new run")
    items[workdir_lib.LEGACY_DATA_ITEM] = grain.checkpoint.CheckpointRestore(data_iterator)
    return self._manager.restore(step, args=ocp.args.Composite(**items))[workdir_lib.STATE_ITEM]

  def _set_aside(self, unreadable: Mapping[int, str], *, fallback: int) -> None:
    if not unreadable:
      return
    for step, problem in unreadable.items():
      logging.warning("the checkpoint at step %d cannot be read (%s): falling back to the one at step %d", step,
                      problem, fallback)
    if self._read_only:
      return
    if jax.process_index() == 0:
      aside = self.workdir / workdir_lib.UNREADABLE_CHECKPOINTS_DIRNAME
      aside.mkdir(exist_ok=True)
      for step in unreadable:
        target = aside / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        (self.directory / str(step)).rename(target)
        logging.warning("moved the unreadable checkpoint at step %d to %s", step, target)
    multihost_utils.sync_global_devices("wgan_gp_jax: unreadable checkpoints set aside")
    self._manager.reload()
