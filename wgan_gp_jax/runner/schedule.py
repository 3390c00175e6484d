"""When the training loop logs, draws, evaluates, saves and stops: a pure function of the generator step, the config's
cadences, the run's evaluation plan (``periodic_eval``: which steps are evaluated) and a stop request.

After generator step ``step`` of a run of ``num_steps`` steps:

  save      every ``checkpoint.every`` steps, at the last step, and on a stop request
  log       every ``logging.log_every`` steps and at every regular save, not at a stop request's save (so that the log
            of a stopped and resumed run reads as if it had never stopped); a step whose evaluation gives values
            logs them too
  draw      every ``logging.figure_every`` steps and at the last step
  evaluate  at the steps of the run's evaluation plan (``periodic_eval.PeriodicFID.due``: the first at
            ``evaluation.every``, 0: never; then a planned multiple of it, and the last step)
  stop      on a stop request (SIGTERM, Ctrl-C), once the step is saved
"""

import dataclasses

import ml_collections


@dataclasses.dataclass(frozen=True)
class Actions:
  """What the loop does after one generator step, in the order it does them: evaluate, log, draw, save, stop."""
  evaluate: bool
  log: bool
  draw: bool
  save: bool
  stop: bool

  @property
  def reads_state(self) -> bool:
    """True when the step's metrics or state are read (so must first be checked to be finite)."""
    return self.evaluate or self.log or self.draw or self.save


def evaluation_due(step: int, every: int) -> bool:
  """True when an evaluation every ``every`` generator steps (0: never) falls on ``step``."""
  return every > 0 and step % every == 0


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The cadences of a run, in generator steps; each ``*_every`` is positive."""
  num_steps: int
  log_every: int
  figure_every: int
  checkpoint_every: int

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "Schedule":
    return cls(num_steps=config.num_steps, log_every=config.logging.log_every,
               figure_every=config.logging.figure_every, checkpoint_every=config.checkpoint.every)

  def actions(self, step: int, *, stop_requested: bool, evaluation_granted: bool) -> Actions:
    """The actions after generator ``step``. ``evaluation_granted``: the evaluation plan evaluates ``step``
    (``periodic_eval.PeriodicFID.due``)."""
    is_last = step == self.num_steps
    regular_save = step % self.checkpoint_every == 0 or is_last
    return Actions(
        evaluate=evaluation_granted,
        log=step % self.log_every == 0 or regular_save,
        draw=step % self.figure_every == 0 or is_last,
        save=regular_save or stop_requested,
        stop=stop_requested,
    )
