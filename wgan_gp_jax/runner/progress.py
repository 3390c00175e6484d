"""How fast a run goes and how long it has left, for its log lines, and a progress bar on an interactive terminal.

Speeds are measured over the steps since the previous report (the first report's window starts once the first step,
which compiles, is done), so pauses for pictures, evaluations and checkpoints count, and the time left
is the steps left at the latest speed. ``images_per_second`` counts the real images the critic sees: ``n_critic *
batch_size`` per generator step.

The bar (tqdm, on stderr) is shown only when stderr is a terminal; while it is, log lines printed to the console go
through ``tqdm.write``, above the bar, instead of breaking it.
"""

import contextlib
import logging
import sys
import time

import tqdm
from tqdm.contrib import logging as tqdm_logging


def format_duration(seconds: float) -> str:
  """``1:02:03`` for 3,723 seconds; ``2d 1:00:00`` past a day."""
  seconds = max(0, int(round(seconds)))
  days, seconds = divmod(seconds, 86_400)
  hours, seconds = divmod(seconds, 3_600)
  minutes, seconds = divmod(seconds, 60)
  clock = f"{hours}:{minutes:02d}:{seconds:02d}"
  return f"{days}d {clock}" if days else clock


def _console_handler_on_root() -> bool:
  return any(isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.stderr)
             for handler in logging.getLogger().handlers)


class Progress:
  """Counts the generator steps from ``start_step`` to ``num_steps``; ``show_bar`` defaults to stderr being a
  terminal. Use it as a context manager around the loop."""

  def __init__(self, *, start_step: int, num_steps: int, images_per_step: int, show_bar: bool | None = None,
               clock=time.perf_counter):
    self.num_steps = num_steps
    self.images_per_step = images_per_step
    self._clock = clock
    self._window_step: int | None = None  # set once the first step is done
    self._window_start = clock()
    self._start_step = start_step
    self._show_bar = sys.stderr.isatty() if show_bar is None else show_bar
    self._bar = None
    self._stack = contextlib.ExitStack()

  def __enter__(self) -> "Progress":
    if self._show_bar:
      self._bar = self._stack.enter_context(tqdm.tqdm(
          total=self.num_steps, initial=self._start_step, unit="step", dynamic_ncols=True, file=sys.stderr,
          smoothing=0.05))
      if _console_handler_on_root():  # else there is no log on the console to redirect
        self._stack.enter_context(tqdm_logging.logging_redirect_tqdm())
    return self

  def __exit__(self, *exc_info) -> None:
    self._stack.close()

  def step_done(self, step: int) -> None:
    if self._window_step is None:
      self._window_step, self._window_start = step, self._clock()
    if self._bar is not None:
      self._bar.update(step - self._bar.n)

  def report(self, step: int) -> dict[str, float]:
    """``steps_per_second``, ``images_per_second`` and ``seconds_left`` since the previous report (empty before a
    step has been timed), and starts the next window."""
    now = self._clock()
    if self._window_step is None or step <= self._window_step or now <= self._window_start:
      return {}
    steps_per_second = (step - self._window_step) / (now - self._window_start)
    self._window_step, self._window_start = step, now
    return {"steps_per_second": steps_per_second, "images_per_second": steps_per_second * self.images_per_step,
            "seconds_left": (self.num_steps - step) / steps_per_second}

  @staticmethod
  def describe(speed: dict[str, float]) -> str:
    """`` | 3.21 steps/s, 1,027 images/s, 0:12:34 left``, or nothing without a measurement."""
    if not speed:
      return ""
    return (f" | {speed['steps_per_second']:.3g} steps/s, {speed['images_per_second']:,.0f} images/s,"
            f" {format_duration(speed['seconds_left'])} left")
