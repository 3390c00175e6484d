"""Checkpoints that never lose a run, on one process: exact resume of an image run, runs stopped by SIGTERM or
killed by SIGKILL at random moments, unreadable checkpoints, refused config changes, non-finite stops, asynchronous
saves and unusable work directories. (Several processes: test_multihost.py; toy resume: test_train.py.)"""

import asyncio
import json
import logging
import os
import pathlib
import pickle
import random
import re
import shutil
import signal
import subprocess
import time
import types

import grain
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from orbax.checkpoint.path import atomicity

from checkpoint_testing import (IMAGE_CONFIG_FILE, REPO_ROOT, TOY_CONFIG_FILE, TOY_OVERRIDES, assert_same_run,
                                assert_same_state, image_config, image_overrides, metrics_without_time, subprocess_env,
                                toy_config, train_command)
from wgan_gp_jax.runner import checkpoint, experiment, preemption, workdir as workdir_lib

TMP_SUFFIX = ".orbax-checkpoint-tmp"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> pathlib.Path:
  return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def image_reference(face_folder, data_dir, tmp_path_factory) -> tuple[experiment.Run, list[dict]]:
  """The uninterrupted 30-step image run and its logged metrics."""
  workdir = tmp_path_factory.mktemp("image_reference")
  return experiment.train_and_evaluate(image_config(face_folder, data_dir), workdir), metrics_without_time(workdir)


def _checkpoint_steps(workdir: pathlib.Path) -> list[int]:
  return sorted(int(path.name) for path in (workdir / "checkpoints").iterdir() if path.name.isdigit())


def _unfinished_saves(workdir: pathlib.Path) -> list[str]:
  return [path.name for path in (workdir / "checkpoints").glob(f"*{TMP_SUFFIX}*")]


def _wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 300) -> None:
  deadline = time.monotonic() + timeout
  while not condition():
    if process.poll() is not None:
      pytest.fail(f"the run ended (status {process.returncode}) before {what}:\n{process.stderr.read()[-3000:]}")
    if time.monotonic() > deadline:
      process.kill()
      pytest.fail(f"timed out waiting for {what}")
    time.sleep(0.01)


def _logged_steps(workdir: pathlib.Path) -> list[int]:
  path = workdir / "metrics.jsonl"
  # A line being written may be incomplete: count complete lines only.
  lines = path.read_text().split("\n")[:-1] if path.exists() else []
  return [json.loads(line)["step"] for line in lines]


def _resumed_from(stderr: str) -> int | None:
  """The step a training process said it resumed from, None if it started afresh (or never got that far)."""
  found = re.search(r"resuming from the checkpoint at generator step (\d+)", stderr)
  return int(found.group(1)) if found else None


def test_image_run_stopped_halfway_and_resumed_is_bit_identical(image_reference, face_folder, data_dir, tmp_path):
  # The learning rate is constant (the image configs' default), so 15 steps then 30 follow the 30-step schedule.
  experiment.train_and_evaluate(image_config(face_folder, data_dir, num_steps=15), tmp_path)
  assert _checkpoint_steps(tmp_path) == [15]
  experiment.train_and_evaluate(image_config(face_folder, data_dir), tmp_path)
  assert_same_run(tmp_path, *image_reference)


def test_checkpoints_of_the_per_process_data_format_resume_on_their_process_count_only(
    image_reference, face_folder, data_dir, tmp_path, monkeypatch):
  # Checkpoints written before the data position was process-count-free hold grain's per-process files in data/.
  def save_per_process(self, step, state, config, data_iterator=None):
    items = {"state": ocp.args.StandardSave(state), "config": ocp.args.JsonSave(checkpoint.config_as_json(config)),
             "data": grain.checkpoint.CheckpointSave(data_iterator)}
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  with monkeypatch.context() as patch:
    patch.setattr(checkpoint.Checkpoints, "save", save_per_process)
    experiment.train_and_evaluate(image_config(face_folder, data_dir, num_steps=15), tmp_path)
  saved = tmp_path / "checkpoints" / "15"
  assert sorted(p.name for p in (saved / "data").iterdir() if p.suffix == ".json") == ["process_0-of-1.json"]
  assert not (saved / workdir_lib.DATA_POSITION_ITEM).exists()

  legacy_copy = tmp_path / "copy"
  shutil.copytree(tmp_path, legacy_copy)
  experiment.train_and_evaluate(image_config(face_folder, data_dir), tmp_path)
  assert_same_run(tmp_path, *image_reference)
  assert (tmp_path / "checkpoints" / "30" / workdir_lib.DATA_POSITION_ITEM).is_dir()

  # As if two processes had written it: this single process cannot know its part of the data.
  data = legacy_copy / "checkpoints" / "15" / "data"
  for index in range(2):
    shutil.copy(data / "process_0-of-1.json", data / f"process_{index}-of-2.json")
  (data / "process_0-of-1.json").unlink()
  with pytest.raises(checkpoint.ProcessCountError, match=(
      r"^the checkpoint at step 15 in .* holds the data positions of 2 process\(es\) \(a checkpoint of an older"
      r" version\) and this run has 1: resume it with that many processes, or start a new run$")):
    experiment.train_and_evaluate(image_config(face_folder, data_dir), legacy_copy)
  assert (legacy_copy / "checkpoints" / "15").is_dir(), "the checkpoint is left as it is"


def _stop_with_sigterm_and_restart(command: list[str], env: dict, workdir: pathlib.Path, *,
                                   after_logged_lines: int) -> tuple[int, str]:
  """Starts the run, sends SIGTERM once it has logged so many lines, checks that it saved a whole checkpoint and
  stopped, then runs the command again to the end and checks that it resumed from that checkpoint. Returns the step
  it stopped at and the stopped process's stderr."""
  process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, text=True)
  _wait_for(lambda: len(_logged_steps(workdir)) >= after_logged_lines, process, f"{after_logged_lines} log lines")
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
  stopped_at = _checkpoint_steps(workdir)[-1]
  assert not _unfinished_saves(workdir)
  finished = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert finished.returncode == 0, finished.stderr[-3000:]
  assert _resumed_from(finished.stderr) == stopped_at
  return stopped_at, stderr


def test_sigterm_saves_at_the_next_step_and_the_restart_continues_bit_identically(
    image_reference, face_folder, data_dir, compilation_cache, tmp_path):
  command = train_command(IMAGE_CONFIG_FILE, tmp_path, image_overrides(face_folder, data_dir))
  stopped_at, stderr = _stop_with_sigterm_and_restart(command, subprocess_env(compilation_cache), tmp_path,
                                                      after_logged_lines=3)
  assert 3 <= stopped_at < 30
  assert (f"stopped by SIGTERM after generator step {stopped_at}, whose checkpoint is saved in"
          f" {tmp_path / 'checkpoints'}: run the same command to continue") in stderr
  assert_same_run(tmp_path, *image_reference)


@pytest.fixture(scope="module")
def toy_reference(tmp_path_factory) -> tuple[experiment.Run, list[dict]]:
  """The uninterrupted toy run and its logged metrics."""
  workdir = tmp_path_factory.mktemp("toy_reference")
  return experiment.train_and_evaluate(toy_config(), workdir), metrics_without_time(workdir)


def test_ctrl_c_saves_at_the_next_step_a_second_one_stops_at_once(toy_reference, tmp_path, monkeypatch, request):
  # As in an interactive shell; a background job (nohup, `&`) starts with SIGINT ignored.
  inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
  request.addfinalizer(lambda: signal.signal(signal.SIGINT, inherited))
  toy_batches = experiment._toy_batches
  interrupt_at = {}  # step -> how many Ctrl-C while its batch is drawn

  def batches_interrupted(config, sharding, key_data, start_step):
    for step, batch in enumerate(toy_batches(config, sharding, key_data, start_step), start=start_step + 1):
      for _ in range(interrupt_at.get(step, 0)):
        os.kill(os.getpid(), signal.SIGINT)
      yield batch

  monkeypatch.setattr(experiment, "_toy_batches", batches_interrupted)
  interrupt_at = {7: 1}
  with pytest.raises(preemption.RunInterrupted) as stop:
    experiment.train_and_evaluate(toy_config(), tmp_path)
  assert (stop.value.step, stop.value.exit_status) == (7, 130)
  assert _checkpoint_steps(tmp_path) == [5, 7]
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

  interrupt_at = {9: 2}
  with pytest.raises(KeyboardInterrupt, match="^second SIGINT: stopping without saving$"):
    experiment.train_and_evaluate(toy_config(), tmp_path)
  assert _checkpoint_steps(tmp_path) == [5, 7]

  interrupt_at = {}
  experiment.train_and_evaluate(toy_config(), tmp_path)
  assert_same_run(tmp_path, *toy_reference)


def test_toy_run_killed_or_stopped_at_random_moments_resumes_bit_identically(toy_reference, compilation_cache,
                                                                          tmp_path_factory):
  """The toy config with its linear learning-rate decay, interrupted three times, each time once the process being
  interrupted has made something (a new step, a save in progress, a new checkpoint): killed by SIGKILL twice, once
  in the middle of a save (saves take half a second longer than usual, ``train_with_slow_commits.py``), and stopped
  once by SIGTERM, which saves a whole checkpoint at the next step and exits. Every restart must resume
  from a checkpoint (a run that started again from step 0 would end identical too, proving nothing). Needs no shared
  images: a new process's exact resume is checked on every clone."""
  workdir = tmp_path_factory.mktemp("killed")
  command = train_command(TOY_CONFIG_FILE, workdir, TOY_OVERRIDES, slow_commits=True)
  env = subprocess_env(compilation_cache)
  rng = random.Random(0)

  def while_training(process, before):
    """Some steps after the last checkpoint: they are lost and redone (or, on SIGTERM, saved at the next step)."""
    done = max(_logged_steps(workdir), default=0)
    _wait_for(lambda: any(step > done for step in _logged_steps(workdir)), process, "a new step")
    time.sleep(rng.uniform(0, 0.3))

  def during_a_save(process, before):
    """A save of this process's (not one a killed predecessor left unfinished) is cut short."""
    _wait_for(lambda: (workdir / "checkpoints").is_dir() and set(_unfinished_saves(workdir)) - before["unfinished"],
              process, "a save")
    time.sleep(rng.uniform(0, 0.15))

  def after_a_checkpoint(process, before):
    """Anywhere in the steps after a checkpoint of this process's."""
    _wait_for(lambda: (workdir / "checkpoints").is_dir() and max(_checkpoint_steps(workdir), default=0) >
              before["latest"], process, "a new checkpoint")
    time.sleep(rng.uniform(0, 0.5))

  resumed_from, stopped_at = [], None
  # The first kill comes after a complete checkpoint, so that every restart has one to resume from.
  for kill_moment, signal_number in ((after_a_checkpoint, signal.SIGKILL), (during_a_save, signal.SIGKILL),
                                     (while_training, signal.SIGTERM)):
    before = {"unfinished": set(_unfinished_saves(workdir)) if (workdir / "checkpoints").is_dir() else set(),
              "latest": max(_checkpoint_steps(workdir), default=0) if (workdir / "checkpoints").is_dir() else 0}
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, text=True)
    kill_moment(process, before)
    logged = max(_logged_steps(workdir), default=0)
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=300)
    resumed_from.append(_resumed_from(stderr))
    if signal_number == signal.SIGKILL:
      assert process.returncode == -signal.SIGKILL
      if kill_moment is during_a_save:
        assert set(_unfinished_saves(workdir)) - before["unfinished"], "the kill was meant to cut a save short"
      continue
    # SIGTERM: a whole checkpoint at the next step, nothing half-written, and the restart resumes from it.
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    stopped_at = _checkpoint_steps(workdir)[-1]
    assert logged <= stopped_at < TOY_OVERRIDES["num_steps"], (logged, stopped_at)
    assert not _unfinished_saves(workdir)
    assert (f"stopped by SIGTERM after generator step {stopped_at}, whose checkpoint is saved in"
            f" {workdir / 'checkpoints'}: run the same command to continue") in stderr

  finished = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert finished.returncode == 0, finished.stderr[-3000:]
  resumed_from.append(_resumed_from(finished.stderr))
  # The first process starts afresh; every later one resumes from a checkpoint, never from nothing; the one after
  # SIGTERM from the checkpoint it saved.
  assert resumed_from[0] is None and all(step is not None and step > 0 for step in resumed_from[1:]), resumed_from
  assert resumed_from[3] == stopped_at, (resumed_from, stopped_at)
  assert not _unfinished_saves(workdir)
  assert_same_run(workdir, *toy_reference)


def constant_rate_toy_config(**overrides):
  """``toy_config`` without the learning rates' linear decay, for the tests whose runs differ in length (and in how
  often they log and save) and not in what a step computes: the decay's length is a constant of the compiled
  program, so every length compiled its own; at a constant rate they share one."""
  return toy_config(**{"critic.linear_decay": False, "generator.linear_decay": False, **overrides})


# Tensorstore completes the reads of a failed restore after orbax has closed their event loop, and says so.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_unreadable_checkpoints_are_reported_and_the_run_falls_back(tmp_path, caplog, monkeypatch):
  config = constant_rate_toy_config(num_steps=15)
  finished = experiment.train_and_evaluate(config, tmp_path)
  checkpoints_dir = tmp_path / "checkpoints"
  # Step 15: every array file cut in half. Step 10: its state's metadata file is gone.
  for path in (checkpoints_dir / "15" / "state").rglob("*"):
    if path.is_file() and path.parent.name == "d":
      path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
  (checkpoints_dir / "10" / "state" / "_METADATA").unlink()

  def refuse(*args, **kwargs):
    raise AssertionError("a checkpoint must load without pickle")

  with monkeypatch.context() as patch, caplog.at_level(logging.WARNING):
    for name in ("load", "loads", "Unpickler"):
      patch.setattr(pickle, name, refuse)
    run = experiment.load_run(tmp_path)
  assert int(run.state.step) == 5
  assert _checkpoint_steps(tmp_path) == [5, 10, 15], "reading must not change a work directory"
  warnings = [record.getMessage() for record in caplog.records if "falling back" in record.getMessage()]
  assert [message.split(" (")[0] for message in warnings] == [
      "the checkpoint at step 15 cannot be read", "the checkpoint at step 10 cannot be read"]
  assert all(message.endswith("): falling back to the one at step 5") for message in warnings)

  resumed = experiment.train_and_evaluate(config, tmp_path)
  assert_same_state(resumed.state, finished.state)
  assert sorted(path.name.split("-")[0] for path in (tmp_path / "unreadable_checkpoints").iterdir()) == ["10", "15"]

  for step in (5, 10, 15):
    (checkpoints_dir / str(step) / "config" / "metadata").unlink()
  with pytest.raises(checkpoint.CheckpointError, match=r"^none of the checkpoints in .* can be read:\n  step 15: "):
    experiment.train_and_evaluate(config, tmp_path)
  assert _checkpoint_steps(tmp_path) == [5, 10, 15]


def test_checkpoints_at_multiples_of_keep_period_are_kept_and_load_by_step(tmp_path):
  run = experiment.train_and_evaluate(
      constant_rate_toy_config(**{"num_steps": 25, "checkpoint.keep": 1, "checkpoint.keep_period": 10}), tmp_path)
  assert _checkpoint_steps(tmp_path) == [10, 20, 25]
  at_10 = experiment.load_run(tmp_path, step=10)
  assert int(at_10.state.step) == 10 and int(experiment.load_run(tmp_path).state.step) == 25
  assert not np.array_equal(at_10.sample(4, seed=0), run.sample(4, seed=0))
  with pytest.raises(FileNotFoundError, match=r"no checkpoint at step 15 in .*; there are steps \[10, 20, 25\]"):
    experiment.load_run(tmp_path, step=15)


def test_resuming_with_another_model_or_optimizer_is_refused(tmp_path):
  experiment.train_and_evaluate(constant_rate_toy_config(num_steps=5), tmp_path)
  with pytest.raises(checkpoint.ConfigMismatchError) as error:
    experiment.train_and_evaluate(
        constant_rate_toy_config(**{"num_steps": 10, "model.width": 32, "critic.name": "sgd"}), tmp_path)
  assert str(error.value) == (
      f"cannot resume from the checkpoint at step 5 in {tmp_path / 'checkpoints'}: it was made with a different"
      " config.\n"
      "  critic.name: 'adam' in the checkpoint, 'sgd' now\n"
      "  model.width: 16 in the checkpoint, 32 now\n"
      "Only checkpoint.every, checkpoint.keep, checkpoint.keep_period, checkpoint.lock_stale_seconds, data.data_dir,"
      " evaluation.every, evaluation.max_time_fraction, evaluation.num_samples, evaluation.reference,"
      " logging.figure_every, logging.log_every, logging.num_fixed_samples, model.kernels, num_devices, num_steps may"
      " change when a run resumes; train a different config in a new work directory.")
  # How long the run goes and how often it logs and saves may change.
  run = experiment.train_and_evaluate(
      constant_rate_toy_config(**{"num_steps": 7, "logging.log_every": 1, "checkpoint.every": 7, "checkpoint.keep": 1}),
      tmp_path)
  assert int(run.state.step) == 7 and _checkpoint_steps(tmp_path) == [7]
  assert [record["step"] for record in metrics_without_time(tmp_path)] == [5, 6, 7]


def test_a_nan_in_a_batch_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  toy_batches = experiment._toy_batches

  def batches_with_a_nan_at_step_7(config, sharding, key_data, start_step):
    for step, batch in enumerate(toy_batches(config, sharding, key_data, start_step), start=start_step + 1):
      yield batch.at[0, 0, 0].set(jnp.nan) if step == 7 else batch

  monkeypatch.setattr(experiment, "_toy_batches", batches_with_a_nan_at_step_7)
  with pytest.raises(experiment.NonFiniteError) as error:
    experiment.train_and_evaluate(
        constant_rate_toy_config(**{"num_steps": 20, "checkpoint.every": 5, "logging.log_every": 10}), tmp_path)
  assert str(error.value) == (
      "non-finite critic_grad_norm, critic_loss, fake_score, generator_grad_norm, generator_loss, gradient_norm,"
      " gradient_penalty, real_score, wasserstein_estimate, training state at generator step 7; the last good"
      " checkpoint, at step 5, is kept and a restart resumes from it")
  assert _checkpoint_steps(tmp_path) == [5]
  assert [record["step"] for record in metrics_without_time(tmp_path)] == [5]
  run = experiment.load_run(tmp_path)
  assert int(run.state.step) == 5 and np.isfinite(run.sample(64, seed=0)).all()


def test_saves_are_asynchronous(tmp_path, monkeypatch):
  """The commit of the step-5 checkpoint is held until the log shows step 8: only a loop that goes on while the
  checkpoint is written gets there."""
  commit = atomicity.AtomicRenameTemporaryPath.finalize
  trained_on_while_saving = []

  async def commit_after_step_8(self):
    if self.get_final().name == "5":
      deadline = time.monotonic() + 30
      while 8 not in _logged_steps(tmp_path) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
      trained_on_while_saving.append(8 in _logged_steps(tmp_path))
    await commit(self)

  monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", commit_after_step_8)
  experiment.train_and_evaluate(constant_rate_toy_config(**{"num_steps": 10, "logging.log_every": 1}), tmp_path)
  assert trained_on_while_saving == [True]
  assert _checkpoint_steps(tmp_path) == [5, 10]


def test_an_unusable_work_directory_is_refused_before_training(tmp_path, monkeypatch):
  (tmp_path / "a_file").write_text("")
  workdir = tmp_path / "a_file" / "run"
  with pytest.raises(checkpoint.CheckpointError) as error:
    experiment.train_and_evaluate(toy_config(), workdir)
  assert str(error.value) == f"cannot write to the work directory {workdir}: Not a directory"

  monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=2**20))
  with pytest.raises(checkpoint.CheckpointError, match=(
      rf"^not enough free space for the checkpoints in {tmp_path / 'run'}: 1.0 MiB free, this run needs about"
      r" 64.\d MiB \(4 more checkpoint\(s\) of 0.\d MiB, and 64 MiB for logs and pictures\)$")):
    experiment.train_and_evaluate(toy_config(), tmp_path / "run")
  assert os.listdir(tmp_path / "run") == []
