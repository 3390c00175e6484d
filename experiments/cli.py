"""Command-line checks shared by the commands that take ``--config``: a user's mistake is one line and exit status 2.

``absl.app.run(main, flags_parser=cli.parse_flags)`` checks, before absl parses anything, that the config file exists
and loads, and that every ``--config.KEY`` override names a key of it (else the nearest valid key is named); absl's
own flag errors (a value of the wrong type) become one line too.
"""

import os
import runpy
import sys
from typing import NoReturn

from absl import flags

from wgan_gp_jax import configuration

USAGE_ERROR_STATUS = 2


def fail(message: str) -> NoReturn:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(USAGE_ERROR_STATUS)


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
  valid = configuration.dotted_keys(config)
  for key in _overridden_keys(argv):
    if key not in valid:
      fail(f"--config.{key}: " + configuration.unknown_key_message(key, valid))


def define_run_flags() -> tuple[flags.FlagHolder[bool], flags.FlagHolder[bool]]:
  """``--ema``/``--noema`` and ``--best``: which generator of a run to load (``experiment.load_run``)."""
  return (flags.DEFINE_bool("ema", True, "Sample from the generator's exponential moving average where the run keeps"
                            " one (config.ema.enabled); --noema for the raw generator."),
          flags.DEFINE_bool("best", False, "Load the checkpoint of the best FID measured during training"
                            " (DIR/best_checkpoint) instead of the latest."))


def parse_flags(argv: list[str]) -> list[str]:
  """A ``flags_parser`` for ``absl.app.run``."""
  check_config_arguments(argv)
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    fail(str(error).splitlines()[0])
