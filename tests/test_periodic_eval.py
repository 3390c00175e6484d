"""FID while training: logged as fid_<N>, the best checkpoint kept, resumed without evaluating again or losing the
best, its cost bounded. A stand-in Inception whose FID follows a script keeps it fast and exact."""

import json
import pathlib
import shutil

import numpy as np
import pytest

from checkpoint_testing import assert_same_state, image_config, metrics_without_time
from wgan_gp_jax import configuration
from wgan_gp_jax.runner import experiment, periodic_eval, workdir as workdir_lib

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


def test_a_run_without_evaluations_due_never_loads_the_inception(face_folder, tmp_path, monkeypatch):
  scripted = ScriptedFID([])
  monkeypatch.setattr(periodic_eval, "load_fid_model", scripted)
  experiment.train_and_evaluate(_config(face_folder, tmp_path / "tfds", **{
      "evaluation.every": 1000, "num_steps": 2, "checkpoint.every": 2}), tmp_path)
  assert scripted.loads == 0 and not (tmp_path / workdir_lib.BEST_CHECKPOINT_DIRNAME).exists()


def test_without_weights_the_run_goes_on_without_fid(face_folder, tmp_path, monkeypatch):
  def unavailable(config):
    raise RuntimeError("no package index")
  monkeypatch.setattr(periodic_eval, "load_fid_model", unavailable)
  run = experiment.train_and_evaluate(_config(face_folder, tmp_path / "tfds", **{
      "num_steps": 2, "checkpoint.every": 2}), tmp_path)
  assert int(run.state.step) == 2 and not _fids(tmp_path)


class _Clock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_evaluations_are_postponed_while_they_would_take_more_than_the_budget(monkeypatch):
  clock = _Clock()
  monkeypatch.setattr(periodic_eval.time, "perf_counter", clock)
  config = configuration.override(configuration.default_config("image"), {
      "evaluation.every": 10, "evaluation.num_samples": 8, "evaluation.max_time_fraction": 0.2})
  scripted = ScriptedFID([1.0] * 10)

  def slow_load(config):
    clock.now += 100.0  # the one-off load (the real images' features, computed once per data set) is not counted
    model = scripted(config)

    def features(images):
      clock.now += 10.0  # each evaluation takes 10 s
      return model.features(images)
    return periodic_eval.FIDModel(features, model.real_mu, model.real_sigma, "slow")

  fid = periodic_eval.PeriodicFID(config, pathlib.Path("/nonexistent"), slow_load)
  sample = lambda num, seed: np.zeros((num, 16, 16, 3), np.uint8)
  assert fid.due(5, run_seconds=1.0) is False  # not a multiple of every
  assert fid.due(10, run_seconds=1.0) is True  # the first is never postponed
  assert fid.evaluate(sample, 10)["fid_seconds"] == 10.0
  # 10 s spent, the next estimated at 10 s: allowed once 20 <= 0.2 * (run + 10), i.e. after 90 s of run time
  # (not counting the load's 100 s).
  assert fid.due(20, run_seconds=160.0) is None
  assert fid.due(30, run_seconds=189.0) is None
  assert fid.due(40, run_seconds=191.0) is True
  fid.evaluate(sample, 40)
  assert fid.due(50, run_seconds=220.0) is None  # 30 s would be over 0.2 * 130 s
  assert fid.due(60, run_seconds=300.0) is True


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
