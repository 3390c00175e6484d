"""``experiments.record``: a run's results and provenance in one JSON record under docs/results/."""

import json
import os
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_record_holds_the_provenance_and_what_the_work_directory_says(tmp_path):
  run = tmp_path / "run"
  (run / "best_checkpoint").mkdir(parents=True)
  (run / "config.json").write_text(json.dumps({"num_steps": 4, "seed": 0}))
  lines = [{"step": 2, "seconds": 10.0, "critic_loss": 1.0, "fid_16": 90.0, "fid_seconds": 1.0},
           {"step": 4, "seconds": 21.5, "critic_loss": 0.5, "fid_16": 70.0, "fid_seconds": 1.0}]
  (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
  (run / "best_checkpoint" / "best.json").write_text(json.dumps({"step": 4, "metric": "fid_16", "value": 70.0}))
  (run / "evaluation_plan.json").write_text(json.dumps({"every": 2, "cadence": 2}))
  (run / "evaluation_step_4.json").write_text(json.dumps({"fid": 65.0, "num_samples": 64}))
  out = tmp_path / "results" / "run.json"
  result = subprocess.run(
      [sys.executable, "-m", "experiments.record", f"--workdir={run}", f"--out={out}", "--command=python -m x",
       "--commit=abc1234", "--cpu=Some CPU (family 1 model 2)", "--date=2026-12-07", "--note=alone",
       f"--include=floor={run / 'evaluation_step_4.json'}"],
      cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads(out.read_text())
  assert {k: record[k] for k in ("command", "commit", "cpu", "date", "note")} == {
      "command": "python -m x", "commit": "abc1234", "cpu": "Some CPU (family 1 model 2)", "date": "2026-12-07",
      "note": "alone"}
  assert record["generator_steps"] == 4 and record["train_seconds"] == 21.5
  assert record["fid_curve"] == {"fid_16": [[2, 90.0], [4, 70.0]]}
  assert record["best"] == {"step": 4, "metric": "fid_16", "value": 70.0}
  assert record["evaluation_plan"] == {"every": 2, "cadence": 2} and record["config"]["num_steps"] == 4
  assert record["evaluations"] == {"evaluation_step_4.json": {"fid": 65.0, "num_samples": 64}}
  assert record["included"] == {"floor": {"fid": 65.0, "num_samples": 64}}

  empty = tmp_path / "empty"
  empty.mkdir()
  refused = subprocess.run(
      [sys.executable, "-m", "experiments.record", f"--workdir={empty}", f"--out={out}", "--command=x"],
      cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=120)
  assert refused.returncode == 2 and refused.stderr.strip().endswith("holds no run (no config.json)")
  assert json.loads(out.read_text()) == record  # the record written before is left as it was
