"""Trains a WGAN-GP experiment.

  python -m experiments.train --config experiments/configs/toy_8gaussians.py --workdir runs/8g \
      [--config.num_steps=2000 ...]

Starting again on a work directory with checkpoints resumes from the newest readable one, so the same command
continues a run that was killed, preempted or stopped; raising ``--config.num_steps`` continues a finished one.

Exit status: 0 when the run is done; 143 (SIGTERM) or 130 (Ctrl-C) after saving a checkpoint on that signal; 1 on
a non-finite loss or state, a config that does not match the checkpoints, a work directory that cannot hold them, or
one that another live trainer holds (``DIR/lock.json``: the message names it; a killed run's lock is taken over);
2 on a mistake in the command line or the config, an image folder that is missing or has no usable image included
(one line naming it, before anything is compiled). Every error is one line on stderr, ``error: ...``.

Several processes (hosts) train one model together when ``--multihost`` is given (``jax.distributed.initialize()``
finds the others by itself on Cloud TPU pod slices, SLURM, Open MPI and Kubernetes), or with
``--coordinator_address``, ``--num_processes`` and ``--process_id`` anywhere else. Every process runs the same
command, with a work directory on a file system they all share.
"""

import sys

import jax
from absl import app, flags
from ml_collections import config_flags

from experiments import cli
from wgan_gp_jax import configuration, data
from wgan_gp_jax.runner import checkpoint, experiment, host, preemption, workdir_lock
from wgan_gp_jax.runner import workdir as workdir_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and pictures.")
_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "Call jax.distributed.initialize() with no arguments, to find the other processes on a"
    " Cloud TPU pod slice, SLURM, Open MPI or Kubernetes.")
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for jax.distributed.initialize(); with --num_processes and"
    " --process_id.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes, with --coordinator_address.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, with --coordinator_address.")
flags.mark_flags_as_required(["config", "workdir"])


def _initialize_distributed() -> None:
  explicit = (_COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if any(value is not None for value in explicit):
    if None in explicit:
      raise app.UsageError("--coordinator_address, --num_processes and --process_id go together")
    if _MULTIHOST.value:
      raise app.UsageError("--multihost finds the processes by itself: give it, or --coordinator_address and co.")
    jax.distributed.initialize(*explicit)
  elif _MULTIHOST.value:
    jax.distributed.initialize()


def _remove_if_empty(workdir, made_now: bool) -> None:
  """A refused run leaves no empty work directory behind it (one that existed before is left alone)."""
  try:
    if made_now and workdir.is_dir() and not any(workdir.iterdir()):
      workdir.rmdir()
  except OSError:
    pass


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  host.keep_freed_memory()  # before the first JAX computation: no page faults per step (BENCHMARKS.md)
  _initialize_distributed()
  workdir = workdir_lib.workdir_path(_WORKDIR.value)
  new_workdir = not workdir.exists()
  try:
    experiment.train_and_evaluate(_CONFIG.value, workdir)
  except configuration.ConfigError as error:
    _remove_if_empty(workdir, new_workdir)
    cli.fail(f"config: {error}")
  except data.ImageSourceError as error:  # the message names the config key and the folder
    _remove_if_empty(workdir, new_workdir)
    cli.fail(str(error))
  except preemption.RunInterrupted as stop:
    print(stop, file=sys.stderr)
    sys.exit(stop.exit_status)
  except (experiment.NonFiniteError, checkpoint.ConfigMismatchError, checkpoint.CheckpointError,
          workdir_lock.WorkdirLocked) as error:
    cli.fail(str(error), cli.RUN_ERROR_STATUS)


if __name__ == "__main__":
  cli.run(main)
