"""What every command shares: a user's mistake on the command line is one line and exit status 2, a run that cannot
go on is one line and exit status 1, and the logs are quiet (``wgan_gp_jax.runner.logs``).

``cli.run(main)`` runs ``main`` under ``absl.app`` with ``parse_flags``, which checks, before absl parses anything,
that the config file exists and loads, that every ``--config.KEY`` override names a key of it (else the nearest valid
key is named), and that ``--workdir`` is not a file; absl's own flag errors (an unknown flag, a missing required one,
a value of the wrong type) and the ``app.UsageError`` a command raises become one line too. ``cli.load_run`` loads a
run for ``sample``, ``interpolate`` and ``evaluate`` with their mistakes as one line.
"""

import os
import runpy
import sys
from typing import Callable, NoReturn

from absl import app, flags

from wgan_gp_jax import configuration
from wgan_gp_jax.runner import logs, workdir as workdir_lib

USAGE_ERROR_STATUS = 2  # a mistake on the command line or in the config
RUN_ERROR_STATUS = 1  # a run that cannot go on: unreadable checkpoints, a refused resumption, a locked work directory


def one_line(message: str) -> str:
  """``message`` on one line: its lines stripped and joined, by a space after one that ends in ':' or '.', else by
  '; ' (an error's list of causes, such as every unreadable checkpoint, stays readable)."""
  joined = ""
  for line in (line.strip() for line in str(message).splitlines()):
    if line:
      joined += ("" if not joined else " " if joined.endswith((":", ".")) else "; ") + line
  return joined


def fail(message: str, status: int = USAGE_ERROR_STATUS) -> NoReturn:
  """Exits with ``status`` after ``error: MESSAGE`` as one line on stderr."""
  print(f"error: {one_line(message)}", file=sys.stderr)
  sys.exit(status)


def flag_value(argv: list[str], name: str) -> str | None:
  """The value of ``--name=value`` or ``--name value`` in ``argv``, else None."""
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      return arg.split("=", 1)[1]
    if arg == f"--{name}" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _overridden_keys(argv: list[str]) -> list[str]:
  return [arg[len("--config."):].split("=", 1)[0] for arg in argv if arg.startswith("--config.")]


def check_config_arguments(argv: list[str]) -> None:
  """Exits with one line if ``--config`` names no loadable config file or an override names an unknown key."""
  path = flag_value(argv, "config")
  if path is None:
    return  # absl says that --config is required
  path = path.split(":", 1)[0]
  if not os.path.isfile(path):
    fail(f"--config: no config file {path!r}")
  try:
    config = runpy.run_path(path)["get_config"]()
  except Exception as error:  # a user's config file may raise anything
    fail(f"--config: cannot load {path}: {type(error).__name__}: {error}")
  valid = configuration.dotted_items(config)
  for key in _overridden_keys(argv):
    if key not in valid:
      fail(f"--config.{key}: " + configuration.unknown_key_message(key, valid))


def check_workdir_argument(argv: list[str]) -> None:
  """Exits with one line if ``--workdir`` names a file (a bucket path is checked when it is used)."""
  workdir = flag_value(argv, "workdir")
  if workdir and workdir_lib.is_local(workdir) and os.path.exists(workdir) and not os.path.isdir(workdir):
    fail(f"--workdir: {workdir} is a file, not a directory")


class RunFlags:
  """``--ema``/``--noema``, ``--best`` and ``--step``: which generator of which checkpoint of a run a command loads."""

  def __init__(self):
    self.ema = flags.DEFINE_bool("ema", True, "Sample from the generator's exponential moving average where the run"
                                 " keeps one (config.ema.enabled); --noema for the raw generator.")
    self.best = flags.DEFINE_bool("best", False, "Load the checkpoint of the best FID measured during training"
                                  " (DIR/best_checkpoint) instead of the latest.")
    self.step = flags.DEFINE_integer("step", None, "Load the checkpoint at this generator step (it must be kept: see"
                                     " checkpoint.keep_period) instead of the latest.")

  def load(self, workdir: str, **options):
    """``load_run`` of the checkpoint and generator the flags choose; ``--step`` with ``--best`` is one line."""
    if self.step.value is not None and self.best.value:
      fail("--step and --best each choose a checkpoint: give one of them")
    return load_run(workdir, use_ema=self.ema.value, best=self.best.value, step=self.step.value, **options)


def load_run(workdir: str, **options):
  """``experiment.load_run(workdir, **options)`` for a command: a work directory that is not a run, or a checkpoint
  it does not keep (``step=``, ``best=True``), exits with one line and status 2; checkpoints that cannot be read, or
  that this version cannot read, with one line and status 1. Nothing in ``workdir`` is changed."""
  from wgan_gp_jax.runner import checkpoint, experiment  # JAX and orbax: only for the commands that load a run
  try:
    return experiment.load_run(workdir, **options)
  except FileNotFoundError as error:
    fail(str(error))
  except (checkpoint.CheckpointError, checkpoint.ConfigMismatchError) as error:
    fail(str(error), RUN_ERROR_STATUS)


def parse_flags(argv: list[str]) -> list[str]:
  """A ``flags_parser`` for ``absl.app.run``."""
  check_config_arguments(argv)
  check_workdir_argument(argv)
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    lines = [line for line in str(error).splitlines() if line.strip()]
    # A config file's get_config() that raised: absl puts the traceback in the message; its last line is the cause.
    cause = f" {lines[-1]}" if len(lines) > 1 and any(line.startswith("Traceback") for line in lines) else ""
    fail(lines[0] + cause)


def run(main: Callable[[list[str]], None]) -> None:
  """``absl.app.run(main)`` with ``parse_flags``, the quiet logs, and ``app.UsageError`` as one line (status 2)."""

  def main_with_one_line_errors(argv: list[str]) -> None:
    logs.setup()
    try:
      main(argv)
    except app.UsageError as error:
      fail(str(error))

  app.run(main_with_one_line_errors, flags_parser=parse_flags)
