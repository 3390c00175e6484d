"""FID while training: logged as fid_<N>, the best checkpoint kept, resumed without evaluating again or losing the
best, its steps planned once (cost bounded) so that an interrupted run evaluates what an uninterrupted one does. A stand-in Inception whose FID follows a script keeps it fast and exact."""

import json
import os
import pathlib
import shutil
import signal
import types

import numpy as np
import pytest

from checkpoint_testing import assert_same_state, image_config, metrics_without_time
from wgan_gp_jax import configuration
from wgan_gp_jax.runner import experiment, periodic_eval, preemption, workdir as workdir_lib

_DIMS = 4


class ScriptedFID:
  """An ``FIDModel`` loader whose i-th evaluation has FID ``4 * offsets[i]**2`` plus a constant (features shifted by
  the offset in each of 4 dimensions)."""

  def __init__(self, offsets):
    self.offsets = list(offsets)
    self.calls = 0
    self.loads = 0
    noise = np.random.default_rng(0).normal(size=(4096, _DIMS))
    self.noise = noise - noise.mean(axis=0)
    self.real_sigma = np.cov(self.noise, rowvar=False)

  def __call__(self, config):
    self.loads += 1

    def features(images):
      assert images.dtype == np.uint8 and images.shape[1:] == (16, 16, 3)
      offset = self.offsets[self.calls]
      self.calls += 1
      return self.noise[:len(images)] - self.noise[:len(images)].mean(axis=0) + offset

    return periodic_eval.FIDModel(features, np.zeros(_DIMS), self.real_sigma, "scripted")


def _config(face_folder, data_dir, **overrides):
  return image_config(face_folder, data_dir, **{
      "num_steps": 6, "checkpoint.every": 3, "logging.log_every": 100, "evaluation.every": 2,
      "evaluation.num_samples": 16, "evaluation.max_time_fraction": 1.0, **overrides})


def _fids(workdir: pathlib.Path, metric: str = "fid_16") -> dict[int, float]:
  return {record["step"]: record[metric] for record in metrics_without_time(workdir) if metric in record}


def test_fid_is_logged_with_n_the_best_checkpoint_kept_and_a_resume_does_not_evaluate_again(
    face_folder, tmp_path, monkeypatch):
  data_dir = tmp_path / "tfds"
  scripted = ScriptedFID([3.0, 1.0, 2.0])
  monkeypatch.setattr(periodic_eval, "load_fid_model", scripted)
  experiment.train_and_evaluate(_config(face_folder, data_dir), tmp_path / "run")
  fids = _fids(tmp_path / "run")
  assert sorted(fids) == [2, 4, 6] and scripted.calls == 3 and scripted.loads == 1
  evaluated = [r for r in metrics_without_time(tmp_path / "run") if "fid_16" in r]
  assert all(sorted(k for k in r if k.startswith("fid")) == ["fid_16", "fid_seconds"] for r in evaluated)
  # 4 * offset^2 apart (the covariance term is the same at every evaluation).
  np.testing.assert_allclose([fids[2] - fids[4], fids[6] - fids[4]], [4 * (9.0 - 1.0), 4 * (4.0 - 1.0)], rtol=1e-6)
  assert periodic_eval.best_state_record(tmp_path / "run") == {"step": 4, "metric": "fid_16", "value": fids[4]}
  assert sorted(p.name for p in (tmp_path / "run" / "best_checkpoint").iterdir()) == ["4", "best.json"]
  best = experiment.load_run(tmp_path / "run", best=True)
  assert int(best.state.step) == 4 and int(experiment.load_run(tmp_path / "run").state.step) == 6

  # Killed after the best checkpoint at step 4 was saved but before the checkpoint at 6: the restart from 3 finds
  # step 4 best again, keeps the checkpoint already there, and ends as the uninterrupted run did.
  killed = tmp_path / "killed"
  shutil.copytree(tmp_path / "run", killed)
  shutil.rmtree(killed / "checkpoints" / "6")
  monkeypatch.setattr(periodic_eval, "load_fid_model", ScriptedFID([1.0, 2.0]))
  resumed = experiment.train_and_evaluate(_config(face_folder, data_dir), killed)
  assert _fids(killed) == fids and periodic_eval.best_state_record(killed) == periodic_eval.best_state_record(
      tmp_path / "run")
  assert_same_state(resumed.state, experiment.load_run(tmp_path / "run").state)

  # Continued to step 10: steps 8 and 10 are evaluated, 6 is not again; 8 is worse than the best, 10 better.
  scripted = ScriptedFID([5.0, 0.5])
  monkeypatch.setattr(periodic_eval, "load_fid_model", scripted)
  experiment.train_and_evaluate(_config(face_folder, data_dir, num_steps=10), tmp_path / "run")
  assert scripted.calls == 2
  assert sorted(_fids(tmp_path / "run")) == [2, 4, 6, 8, 10]
  assert periodic_eval.best_state_record(tmp_path / "run")["step"] == 10
  assert int(experiment.load_run(tmp_path / "run", best=True).state.step) == 10


def test_the_last_step_is_evaluated_even_before_evaluation_every(face_folder, tmp_path, monkeypatch):
  scripted = ScriptedFID([1.0])
  monkeypatch.setattr(periodic_eval, "load_fid_model", scripted)
  experiment.train_and_evaluate(_config(face_folder, tmp_path / "tfds", **{
      "evaluation.every": 1000, "num_steps": 2, "checkpoint.every": 2}), tmp_path)
  assert scripted.loads == 1 and sorted(_fids(tmp_path)) == [2]
  assert periodic_eval.best_state_record(tmp_path)["step"] == 2


def test_without_weights_the_run_goes_on_without_fid(face_folder, tmp_path, monkeypatch):
  def unavailable(config):
    raise RuntimeError("no package index")
  monkeypatch.setattr(periodic_eval, "load_fid_model", unavailable)
  run = experiment.train_and_evaluate(_config(face_folder, tmp_path / "tfds", **{
      "num_steps": 2, "checkpoint.every": 2}), tmp_path)
  assert int(run.state.step) == 2 and not _fids(tmp_path)


def test_the_fid_loader_uses_the_runs_training_faces_preprocessed_as_the_run_and_scores_its_ema_samples(
    face_folder, tmp_path, monkeypatch):
  """The real ``load_fid_model`` with a stand-in Inception (2x2 block means of the pixels): the reference is the run's
  image folder at its resolution, crop and channels, less its held-out faces; the images scored are the EMA
  generator's samples of the evaluation's fixed latents."""
  from wgan_gp_jax.metrics import fid as fid_lib
  from wgan_gp_jax.metrics import inception, reference

  seen = []

  def block_means(images, *, params, batch_size=50, preprocessing="pytorch_fid", with_logits=False, kernels="auto"):
    seen.append(np.array(images))
    x = np.asarray(images, np.float64)
    n, h, w, c = x.shape
    return {"pool3": x.reshape(n, 2, h // 2, 2, w // 2, c).mean(axis=(2, 4)).reshape(n, -1)}

  calls = []
  reference_features = reference.reference_features

  def spy(folder, **kwargs):
    calls.append((str(folder), kwargs))
    return reference_features(folder, **kwargs)

  monkeypatch.setattr(inception, "inception_features", block_means)
  weights = types.SimpleNamespace(source="stand_in_for_periodic_eval.npz", has_logits=False)
  monkeypatch.setattr(inception, "load_inception", lambda weights_path=None, cache=None: weights)
  monkeypatch.setattr(reference, "reference_features", spy)
  config = _config(face_folder, tmp_path / "tfds", num_steps=4, **{"model.kernels": "xla"})
  experiment.train_and_evaluate(config, tmp_path / "run")
  during_run = list(seen)  # what the run passed the network; the checks below call it too

  (folder, kwargs), = calls
  assert folder == str(face_folder) and kwargs["params"] is weights and kwargs["kernels"] == "xla"
  assert (kwargs["resolution"], kwargs["crop"], kwargs["channels"]) == (16, config.data.crop, 3)
  real = reference.load_reference_images(face_folder, resolution=16, crop=config.data.crop, channels=3)
  np.testing.assert_array_equal(during_run[0], real)  # the whole folder's features, cached once
  training = block_means(real[:64 - config.data.held_out], params=None)["pool3"]  # the 56 faces trained on
  ema_samples = experiment.load_run(tmp_path / "run").sample(16, periodic_eval.SAMPLE_SEED)
  np.testing.assert_array_equal(during_run[-1], ema_samples)  # the last evaluation, at step 4, scored the EMA's
  raw = experiment.load_run(tmp_path / "run", use_ema=False).sample(16, periodic_eval.SAMPLE_SEED)
  assert not np.array_equal(raw, ema_samples)

  def fid(samples, real_features):
    mu, sigma = fid_lib.gaussian_statistics(block_means(samples, params=None)["pool3"])
    real_mu, real_sigma = fid_lib.gaussian_statistics(real_features)
    return float(fid_lib.frechet_distance(mu, sigma, real_mu, real_sigma))

  np.testing.assert_allclose(_fids(tmp_path / "run")[4], fid(ema_samples, training), rtol=1e-6)


def test_the_cadence_is_the_smallest_multiple_of_every_within_the_time_bound():
  # 100 generator steps of 1 s, evaluations of 10 s, at most a quarter of the wall time: E <= 0.25 * (100 + E) allows
  # E <= 33 s, three evaluations: the first (10), one at 50 and the last (100).
  plan = dict(every=10, num_steps=100, step_seconds=1.0, evaluation_seconds=10.0)
  assert periodic_eval.plan_cadence(**plan, max_time_fraction=0.25) == 50
  assert periodic_eval.evaluation_steps(every=10, cadence=50, num_steps=100) == [10, 50, 100]
  assert periodic_eval.plan_cadence(**plan, max_time_fraction=1.0) == 10  # every multiple of every
  # Nothing fits: the first and the last only.
  assert periodic_eval.plan_cadence(**plan, max_time_fraction=0.01) == 100
  assert periodic_eval.evaluation_steps(every=10, cadence=100, num_steps=100) == [10, 100]
  # The last step is evaluated where no multiple falls on it; an every beyond the run leaves only the last.
  assert periodic_eval.evaluation_steps(every=4, cadence=8, num_steps=21) == [4, 8, 16, 21]
  assert periodic_eval.evaluation_steps(every=50, cadence=50, num_steps=20) == [20]
  with pytest.raises(ValueError, match="every and num_steps must be positive"):
    periodic_eval.plan_cadence(**{**plan, "every": 0}, max_time_fraction=0.5)


def test_the_plan_is_kept_by_later_starts_with_the_same_evaluation_settings(tmp_path):
  config = configuration.override(configuration.default_config("image"), {
      "num_steps": 21, "evaluation.every": 4, "evaluation.num_samples": 8, "evaluation.max_time_fraction": 0.5})
  fid = periodic_eval.PeriodicFID(config, tmp_path)
  assert [step for step in range(1, 22) if fid.due(step)] == [4, 8, 12, 16, 20, 21]  # not planned yet
  fid.plan(4, step_seconds=1.0, evaluation_seconds=8.0)  # E <= 21: two evaluations of 8 s, the first and the last
  assert fid.cadence == 21 and [step for step in range(1, 22) if fid.due(step)] == [4, 21]
  fid.plan(8, step_seconds=100.0, evaluation_seconds=0.0)  # planned once
  assert fid.cadence == 21
  assert periodic_eval.PeriodicFID(config, tmp_path).cadence == 21  # a later start reads it
  for changed in ({"evaluation.every": 2}, {"evaluation.num_samples": 16}, {"evaluation.max_time_fraction": 0.2}):
    assert periodic_eval.PeriodicFID(configuration.override(config, changed), tmp_path).cadence is None, changed


class PixelFID:
  """An ``FIDModel`` loader whose features are a function of the images (their first pixels), so that equal samples
  have equal FIDs; ``interrupt_at_call`` sends this process SIGINT during that evaluation (0-based)."""

  def __init__(self, interrupt_at_call=None):
    self.interrupt_at_call = interrupt_at_call
    self.calls = 0

  def __call__(self, config):
    def features(images):
      if self.calls == self.interrupt_at_call:
        os.kill(os.getpid(), signal.SIGINT)
      self.calls += 1
      return images.reshape(len(images), -1)[:, :_DIMS].astype(np.float64) / 255.0

    return periodic_eval.FIDModel(features, np.full(_DIMS, 0.5), np.eye(_DIMS) * 0.05, "pixels")


def test_a_run_interrupted_during_an_evaluation_evaluates_the_same_steps_and_keeps_the_same_best(
    face_folder, tmp_path, monkeypatch):
  data_dir = tmp_path / "tfds"
  config = _config(face_folder, data_dir, num_steps=11, **{"evaluation.max_time_fraction": 0.5})
  plans = []

  def plan_cadence(**kwargs):  # the measured times differ between runs: the plan is what must not change
    plans.append(kwargs)
    return 4

  monkeypatch.setattr(periodic_eval, "plan_cadence", plan_cadence)
  monkeypatch.setattr(periodic_eval, "load_fid_model", PixelFID())
  experiment.train_and_evaluate(config, tmp_path / "run")
  fids = _fids(tmp_path / "run")
  assert sorted(fids) == [2, 4, 8, 11] and len(plans) == 1 and plans[0]["every"] == 2  # the last step evaluated
  assert plans[0]["step_seconds"] > 0 and plans[0]["evaluation_seconds"] > 0
  best = periodic_eval.best_state_record(tmp_path / "run")
  assert best["value"] == min(fids.values()) and fids[best["step"]] == best["value"]

  # SIGINT during the evaluation at step 4: the run saves step 5 and stops; the restart follows the plan.
  monkeypatch.setattr(periodic_eval, "load_fid_model", PixelFID(interrupt_at_call=1))
  with pytest.raises(preemption.RunInterrupted) as stop:
    experiment.train_and_evaluate(config, tmp_path / "stopped")
  assert stop.value.step == 5 and sorted(_fids(tmp_path / "stopped")) == [2, 4] and len(plans) == 2
  monkeypatch.setattr(periodic_eval, "load_fid_model", PixelFID())
  resumed = experiment.train_and_evaluate(config, tmp_path / "stopped")
  assert len(plans) == 2  # the restart reads the plan of the stopped start
  assert _fids(tmp_path / "stopped") == fids
  assert periodic_eval.best_state_record(tmp_path / "stopped") == best
  assert_same_state(experiment.load_run(tmp_path / "stopped", best=True).state,
                    experiment.load_run(tmp_path / "run", best=True).state)
  assert_same_state(resumed.state, experiment.load_run(tmp_path / "run").state)


def test_evaluation_config_is_checked():
  toy = configuration.override(configuration.default_config("toy"), {"evaluation.every": 10})
  with pytest.raises(configuration.ConfigError, match="FID is for image runs"):
    configuration.validate(toy)
  image = configuration.override(configuration.default_config("image"), {"evaluation.max_time_fraction": 0.0})
  with pytest.raises(configuration.ConfigError, match=r"evaluation.max_time_fraction must be in \(0, 1\]"):
    configuration.validate(image)


def test_plot_metrics_draws_the_fid_curve_of_runs(tmp_path):
  import os
  import subprocess
  import sys
  repo = pathlib.Path(__file__).resolve().parents[1]
  for name, values in (("a", [90.0, 70.0]), ("b", [80.0, 60.0])):
    (tmp_path / name).mkdir()
    lines = [{"step": 100, "seconds": 1.0, "critic_loss": 1.0}, {"step": 200, "seconds": 2.0, "fid_16": values[0]},
             {"step": 400, "seconds": 4.0, "fid_16": values[1]}]
    (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
  steps, values = workdir_lib.metric_curve(tmp_path / "a", "fid_16")
  assert steps.tolist() == [200, 400] and values.tolist() == [90.0, 70.0]
  env = {**os.environ, "PYTHONPATH": str(repo)}
  out = tmp_path / "fid.png"
  subprocess.run([sys.executable, "-m", "experiments.plot_metrics", f"--workdirs={tmp_path / 'a'},{tmp_path / 'b'}",
                  "--metric=fid_16", f"--out={out}", "--floor=5.3"], cwd=repo, env=env, check=True, timeout=120)
  assert out.read_bytes()[:4] == b"\x89PNG"
  for step, num_samples, fid in ((400, 64, 50.0), (200, 64, 65.0), (300, 32, 55.0)):
    (tmp_path / "a" / workdir_lib.evaluation_filename(step)).write_text(
        json.dumps({"num_samples": num_samples, "fid": fid}))
  raw = workdir_lib.evaluation_filename(400, raw_of_ema_run=True)  # --noema of a run with an EMA: its own file
  assert raw == "evaluation_step_400_raw.json" and workdir_lib.evaluation_filename(400) == "evaluation_step_400.json"
  assert workdir_lib.evaluation_filename() == "evaluation.json"
  (tmp_path / "a" / raw).write_text(json.dumps({"num_samples": 64, "fid": 99.0}))
  evaluated = workdir_lib.evaluated_curve(tmp_path / "a", "fid")
  assert {n: (s.tolist(), v.tolist()) for n, (s, v) in evaluated.items()} == {32: ([300], [55.0]),
                                                                               64: ([200, 400], [65.0, 50.0])}
  out.unlink()
  subprocess.run([sys.executable, "-m", "experiments.plot_metrics", f"--workdirs={tmp_path / 'a'}", "--metric=fid_16",
                  f"--out={out}", "--evaluated=fid"], cwd=repo, env=env, check=True, timeout=120)
  assert out.read_bytes()[:4] == b"\x89PNG"
  missing = subprocess.run([sys.executable, "-m", "experiments.plot_metrics", f"--workdirs={tmp_path / 'a'}",
                            "--metric=fid_2000", f"--out={out}"], cwd=repo, env=env, capture_output=True, text=True,
                           timeout=120)
  assert missing.returncode == 2 and "has no 'fid_2000'" in missing.stderr.strip().splitlines()[-1]
