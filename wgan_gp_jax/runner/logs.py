"""Quiet, readable logs: our lines at INFO, other libraries' chatter (orbax's, absl's, jax's) only from WARNING up.

The package logs with the standard library's ``logging`` (the module-level functions) and never configures it on
import. ``setup()``, called by every command of ``experiments``, is the one place that does: callable from any entry
point (a notebook, another project's script) for the same lines.
"""

import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname).1s %(message)s"
DATE_FORMAT = "%H:%M:%S"
# Our modules: lines logged from a file under one of these folders pass at INFO.
_OUR_FOLDERS = tuple(f"{os.sep}{name}{os.sep}" for name in ("wgan_gp_jax", "experiments"))
# Orbax's lines that tell a user nothing, by the start of their message: that a checkpoint folder is opened read-only
# (what a command that only reads a run means to do), and that a checkpoint's metadata file does not parse (such a
# checkpoint is reported as unreadable, with that cause, by wgan_gp_jax.runner.checkpoint).
_ORBAX_NOISE = ("Given directory is read only", "Failed to json parse Metadata file")


def is_ours_or_important(record: logging.LogRecord) -> bool:
  """Keeps our INFO lines and every library's warnings and errors, but for ``_ORBAX_NOISE``."""
  if f"{os.sep}orbax{os.sep}" in record.pathname and str(record.msg).startswith(_ORBAX_NOISE):
    return False
  return record.levelno >= logging.WARNING or any(folder in record.pathname for folder in _OUR_FOLDERS)


def setup(level: int = logging.INFO) -> None:
  """Sends log lines to stderr, one per line with the time, ours from ``level`` up and the others' from WARNING up.

  The root logger's handlers are replaced (absl's, which ``absl.app.run`` installs, included), so no line is printed
  twice. Libraries that log through absl (orbax) log through the standard library's root logger as well.
  """
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
  handler.addFilter(is_ours_or_important)
  root = logging.getLogger()
  root.handlers = [handler]
  root.setLevel(level)
  # absl's logger (orbax logs through it) follows its own verbosity flag once absl.app has run; its INFO lines are
  # dropped by the filter, and the level here only spares formatting them.
  logging.getLogger("absl").setLevel(logging.WARNING)
