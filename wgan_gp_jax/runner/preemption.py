"""Stopping a run cleanly on SIGTERM (the notice a TPU VM gets before preemption) or Ctrl-C.

The signal only asks: the step loop notices it at the next step boundary, saves a checkpoint, waits for it to be
written and stops with ``RunInterrupted``. A second signal of either kind stops at once (``KeyboardInterrupt``); the
checkpoints on disk stay whole either way, as saves are atomic.

With several processes the processes must agree on the step to save at, though the notice may reach only one of
them. That is what JAX's preemption service does (started by ``jax.distributed.initialize()``: it catches SIGTERM,
tells every process, and they agree on a step), read here through orbax's ``reached_preemption``; Ctrl-C is turned
into the same notice. A single process needs no agreement and catches both signals itself.
"""

import logging
import os
import pathlib
import signal
import threading
from types import FrameType

import jax
import orbax.checkpoint as ocp


class RunInterrupted(Exception):
  """The run stopped on a signal after saving a checkpoint; running the same command again continues it."""

  def __init__(self, *, step: int, signal_number: int, directory: pathlib.Path):
    super().__init__(f"stopped by {signal.Signals(signal_number).name} after generator step {step}, whose checkpoint"
                     f" is saved in {directory}: run the same command to continue")
    self.step = step
    # What a shell reports for a process killed by that signal, so that scripts see the usual status.
    self.exit_status = 128 + signal_number


class StopRequests:
  """Catches SIGTERM and SIGINT while it is entered (in the main thread); ``signal_at(step)`` says when to stop."""

  def __init__(self):
    self._received: int | None = None
    self._previous_handlers: dict[int, object] = {}

  def __enter__(self) -> "StopRequests":
    if threading.current_thread() is not threading.main_thread():
      logging.warning("not in the main thread: SIGTERM and Ctrl-C will stop the run without a checkpoint")
      return self
    handled = [signal.SIGINT] if jax.process_count() > 1 else [signal.SIGINT, signal.SIGTERM]
    for number in handled:
      self._previous_handlers[number] = signal.signal(number, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    for number, handler in self._previous_handlers.items():
      signal.signal(number, handler)
    self._previous_handlers.clear()

  def _handle(self, number: int, frame: FrameType | None) -> None:
    del frame
    if self._received is not None:
      raise KeyboardInterrupt(f"second {signal.Signals(number).name}: stopping without saving")
    self._received = number
    logging.warning("received %s: saving a checkpoint at the next step boundary, then stopping (send it again to"
                    " stop at once)", signal.Signals(number).name)
    if jax.process_count() > 1:
      # Every process must save at the same step: hand Ctrl-C to JAX's preemption service, which listens for SIGTERM.
      os.kill(os.getpid(), signal.SIGTERM)

  def signal_at(self, step: int) -> int | None:
    """The signal to stop on after generator step ``step``, if any. Every process calls it after every step."""
    if jax.process_count() > 1:
      return (self._received or signal.SIGTERM) if ocp.multihost.reached_preemption(step) else None
    return self._received
