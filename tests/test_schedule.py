"""The training loop's schedule: which generator steps log, draw, evaluate, save and stop."""

import ml_collections

from wgan_gp_jax.runner import schedule as schedule_lib

SCHEDULE = schedule_lib.Schedule(num_steps=25, log_every=4, figure_every=7, checkpoint_every=10)


def _steps_that(action: str, schedule: schedule_lib.Schedule = SCHEDULE, *, stop_at: int | None = None,
                granted: frozenset[int] = frozenset()) -> set[int]:
  """The steps of a whole run whose actions include ``action``, with a stop request at ``stop_at``."""
  return {step for step in range(1, schedule.num_steps + 1)
          if getattr(schedule.actions(step, stop_requested=step == stop_at, evaluation_granted=step in granted),
                     action)}


def test_saves_every_checkpoint_every_steps_and_at_the_last():
  assert _steps_that("save") == {10, 20, 25}
  assert _steps_that("save", schedule_lib.Schedule(num_steps=30, log_every=4, figure_every=7,
                                                   checkpoint_every=10)) == {10, 20, 30}


def test_logs_every_log_every_steps_and_at_every_regular_save():
  assert _steps_that("log") == {4, 8, 12, 16, 20, 24} | {10, 25}


def test_draws_every_figure_every_steps_and_at_the_last():
  assert _steps_that("draw") == {7, 14, 21, 25}
  assert _steps_that("draw", schedule_lib.Schedule(num_steps=21, log_every=4, figure_every=7,
                                                   checkpoint_every=10)) == {7, 14, 21}


def test_a_stop_request_saves_and_stops_without_a_log_line():
  actions = SCHEDULE.actions(13, stop_requested=True, evaluation_granted=False)
  assert actions == schedule_lib.Actions(evaluate=False, log=False, draw=False, save=True, stop=True)
  assert _steps_that("save", stop_at=13) == {10, 13, 20, 25}
  assert _steps_that("stop", stop_at=13) == {13}
  assert _steps_that("log", stop_at=13) == _steps_that("log")
  # On a step that logs or draws anyway, a stop request changes nothing but the stop.
  assert SCHEDULE.actions(14, stop_requested=True, evaluation_granted=False) == schedule_lib.Actions(
      evaluate=False, log=False, draw=True, save=True, stop=True)
  assert SCHEDULE.actions(25, stop_requested=True, evaluation_granted=False) == schedule_lib.Actions(
      evaluate=False, log=True, draw=True, save=True, stop=True)


def test_no_stop_without_a_request_not_even_at_the_last_step():
  assert _steps_that("stop") == set()


def test_evaluation_cadence():
  assert {step for step in range(1, 26) if schedule_lib.evaluation_due(step, 5)} == {5, 10, 15, 20, 25}
  assert {step for step in range(1, 26) if schedule_lib.evaluation_due(step, 0)} == set()
  assert {step for step in range(1, 26) if schedule_lib.evaluation_due(step, 30)} == set()


def test_evaluates_exactly_where_granted_and_forces_nothing_else():
  granted = frozenset({6, 12})
  assert _steps_that("evaluate", granted=granted) == {6, 12}
  assert SCHEDULE.actions(6, stop_requested=False, evaluation_granted=True) == schedule_lib.Actions(
      evaluate=True, log=False, draw=False, save=False, stop=False)
  assert _steps_that("log", granted=granted) == _steps_that("log")


def test_the_state_is_read_at_every_step_with_an_action():
  assert {step for step in range(1, 26)
          if SCHEDULE.actions(step, stop_requested=False, evaluation_granted=step == 6).reads_state} == (
              {4, 8, 12, 16, 20, 24} | {10, 25} | {7, 14, 21} | {6})
  assert not SCHEDULE.actions(1, stop_requested=False, evaluation_granted=False).reads_state
  assert SCHEDULE.actions(1, stop_requested=True, evaluation_granted=False).reads_state


def test_from_config_reads_the_cadences():
  config = ml_collections.ConfigDict({"num_steps": 25, "logging": {"log_every": 4, "figure_every": 7},
                                      "checkpoint": {"every": 10}})
  assert schedule_lib.Schedule.from_config(config) == SCHEDULE
