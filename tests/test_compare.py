"""``experiments.compare``: one config, several objectives or named variants, one table and one figure (weight-free
metric here, so the test needs no Inception weights)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from wgan_gp_jax import objectives

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
_ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def _compare(*args: str, env: dict[str, str] = _ENV) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "experiments.compare", "--config=experiments/configs/celeba32.py",
                         *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_objective_settings_take_the_papers_optimizer():
  # (experiments.compare defines absl flags, so the tests import what it uses, not it.)
  assert objectives.objective_settings("wgan_gp") == {"objective.name": "wgan_gp"}
  assert objectives.objective_settings("wgan_clip") == {
      "objective.name": "wgan_clip", **objectives.RECOMMENDED_OPTIMIZERS["wgan_clip"]}
  assert objectives.objective_settings("wgan_clip", paper_optimizer=False) == {"objective.name": "wgan_clip"}


def test_variants_with_unknown_keys_are_one_line_and_exit_2(tmp_path):
  variants = tmp_path / "variants.py"
  variants.write_text("def get_variants():\n  return {'wide': {'model.widht': 64}}\n")
  result = _compare(f"--variants={variants}", f"--workdir={tmp_path / 'runs'}")
  assert result.returncode == 2
  assert result.stderr.strip() == ("error: --variants: variant 'wide': unknown config key 'model.widht'; did you mean"
                                   " 'model.width'?")
  assert not (tmp_path / "runs" / "wide").exists()
  missing = _compare(f"--variants={tmp_path / 'none.py'}", f"--workdir={tmp_path / 'runs'}")
  assert missing.returncode == 2 and "--variants: no file" in missing.stderr


def test_compare_trains_each_variant_and_writes_table_and_figure(face_folder, command_env, tmp_path):
  # Each variant has its own num_steps (a shared wall-time budget); the command line's overrides apply to all.
  variants = tmp_path / "variants.py"
  clip = {"objective.name": "wgan_clip", **objectives.RECOMMENDED_OPTIMIZERS["wgan_clip"], "num_steps": 1}
  variants.write_text(f"def get_variants():\n  return {{'clip': {clip!r}, 'gp': {{'num_steps': 2}}}}\n")
  workdir = tmp_path / "compare"
  args = [f"--variants={variants}", f"--workdir={workdir}", "--num_samples=16", "--metrics=swd", "--grid_samples=4",
          f"--config.data.image_folder={face_folder}", f"--config.data.data_dir={tmp_path / 'tfds'}",
          "--config.data.resolution=16", "--config.data.held_out=8", "--config.model.width=4", "--config.batch_size=8",
          "--config.n_critic=2", "--config.evaluation.every=0", "--config.logging.figure_every=100"]
  result = _compare(*args, env=command_env)
  assert result.returncode == 0, result.stderr[-4000:]
  summary = json.loads((workdir / "comparison.json").read_text())
  rows = {row["name"]: row for row in summary["rows"]}
  assert list(rows) == ["clip", "gp"]
  assert rows["clip"]["steps"] == 1 and rows["gp"]["steps"] == 2
  assert rows["gp"]["settings"] == "as configured"
  for name, objective in (("clip", "wgan_clip"), ("gp", "wgan_gp")):
    assert rows[name]["swd"] > 0
    config = json.loads((workdir / name / "config.json").read_text())
    assert config["objective"]["name"] == objective and config["data"]["resolution"] == 16
  assert json.loads((workdir / "clip" / "config.json").read_text())["critic"]["name"] == "rmsprop"
  assert summary["real_floor"]["swd"] > 0
  table = (workdir / "comparison.md").read_text()
  assert "| variant | settings | generator steps |" in table and "real vs real (16 vs 16)" in table
  assert "| `clip` | objective.name=wgan_clip, critic.name=rmsprop," in table
  assert (workdir / "comparison.png").read_bytes()[:4] == b"\x89PNG"
  # Run again with two seeds: the runs above are not the seeds' (their directories differ), each seed trains its own
  # run with its own config.seed, and the summary is the mean and spread of the seeds' values.
  seeded = _compare(*args, "--seeds=3,4", env=command_env)
  assert seeded.returncode == 0, seeded.stderr[-4000:]
  summary = json.loads((workdir / "comparison.json").read_text())
  assert [(row["name"], row["seed"]) for row in summary["rows"]] == [("clip", 3), ("gp", 3), ("clip", 4), ("gp", 4)]
  for row in summary["rows"]:
    config = json.loads((workdir / row["name"] / f"seed_{row['seed']}" / "config.json").read_text())
    assert config["seed"] == row["seed"]
  gp_swd = [row["swd"] for row in summary["rows"] if row["name"] == "gp"]
  assert gp_swd[0] != gp_swd[1]  # other seeds, other runs
  gp_summary = summary["seed_summary"][1]
  assert gp_summary["name"] == "gp" and gp_summary["seeds"] == [3, 4]
  assert gp_summary["swd_mean"] == pytest.approx(sum(gp_swd) / 2)
  assert gp_summary["swd_std"] == pytest.approx(abs(gp_swd[0] - gp_swd[1]) / 2 ** 0.5)
  assert "| `gp` | 3, 4 |" in (workdir / "comparison.md").read_text()
  # The real floor was evaluated by the first command with the same arguments: not again.
  assert summary["real_floor"] == json.loads((workdir / "real_floor" / "evaluation.json").read_text())
