"""Quiet, readable logs: our progress lines at INFO, other libraries' chatter only from WARNING up."""

import logging as std_logging

from absl import logging


def _ours_or_important(record: std_logging.LogRecord) -> bool:
  return record.levelno >= std_logging.WARNING or "wgan_gp_jax" in record.pathname or "experiments" in record.pathname


def setup() -> None:
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_ours_or_important)
