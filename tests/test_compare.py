"""``experiments.compare``: one model, several objectives, one table and one figure (weight-free metric here, so the
test needs no Inception weights)."""

import json
import os
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_compare_trains_each_objective_and_writes_table_and_figure(face_folder, tmp_path):
  workdir = tmp_path / "compare"
  command = [
      sys.executable, "-m", "experiments.compare", "--config=experiments/configs/celeba32.py",
      "--objectives=wgan_clip,wgan_gp", f"--workdir={workdir}", "--num_samples=16", "--metrics=swd",
      "--grid_samples=4", f"--config.data.image_folder={face_folder}", f"--config.data.data_dir={tmp_path / 'tfds'}",
      "--config.data.resolution=16", "--config.model.width=4", "--config.batch_size=8", "--config.n_critic=2",
      "--config.num_steps=2", "--config.logging.figure_every=100"]
  env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
  result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  summary = json.loads((workdir / "comparison.json").read_text())
  rows = {row["objective"]: row for row in summary["rows"]}
  assert set(rows) == {"wgan_clip", "wgan_gp"}
  assert rows["wgan_clip"]["optimizer"] == "RMSProp(5e-05)"  # the original WGAN's optimizer
  assert rows["wgan_gp"]["optimizer"] == "Adam(0.0002, 0.5, 0.9)"  # the config's
  for name, row in rows.items():
    assert row["steps"] == 2 and row["swd"] > 0
    config = json.loads((workdir / name / "config.json").read_text())
    assert config["objective"]["name"] == name and config["data"]["resolution"] == 16
  assert summary["real_floor"]["swd"] > 0
  table = (workdir / "comparison.md").read_text()
  assert "| `wgan_clip` | RMSProp(5e-05) | 2 |" in table and "real vs real (16 vs 16)" in table
  assert (workdir / "comparison.png").read_bytes()[:4] == b"\x89PNG"
  # Run again: everything is done, nothing is trained or evaluated anew.
  again = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-4000:]
  assert json.loads((workdir / "comparison.json").read_text())["rows"] == summary["rows"]
