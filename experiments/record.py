r"""Writes the record of a run that a figure in README or docs quotes: ``docs/results/<name>.json`` with the command
that made the run, the commit and CPU it ran on, the date, and everything the run's work directory says of its
results (its config, FID curve, evaluation plan, best checkpoint, training wall time and every ``evaluate`` result).

  python -m experiments.record --workdir runs/celeba32 --out docs/results/celeba32_default.json \
      --command "python -m experiments.train --config experiments/configs/celeba32.py --workdir runs/celeba32" \
      [--commit 0123abc] [--cpu "AMD EPYC (family 25 model 17)"] [--date 2026-12-07] [--note "..."] \
      [--include real_floor=runs/floor/evaluation.json]

``--commit``, ``--cpu`` and ``--date`` default to this checkout's commit, this machine's CPU and today: give them
where the run was made elsewhere or earlier. The record is rewritten whole each time.
"""

from __future__ import annotations

import json
import pathlib
import time

from absl import app, flags

from experiments import cli, subruns
from wgan_gp_jax.runner import host, periodic_eval, workdir as workdir_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's work directory.")
_OUT = flags.DEFINE_string("out", None, "The record to write (docs/results/NAME.json).")
_COMMAND = flags.DEFINE_string("command", None, "The command that made the run.")
_COMMIT = flags.DEFINE_string("commit", None, "The commit the run was made with (default: this checkout's).")
_CPU = flags.DEFINE_string("cpu", None, "The CPU the run was made on (default: this machine's).")
_DATE = flags.DEFINE_string("date", None, "The date of the run, YYYY-MM-DD (default: today).")
_NOTE = flags.DEFINE_string("note", "", "What else a reader must know (other processes on the machine, ...).")
_INCLUDE = flags.DEFINE_list("include", [], "NAME=FILE.json pairs: other results the figure quotes beside the run's"
                             " (a real-vs-real floor's evaluation.json, ...), kept under 'included'.")
flags.mark_flags_as_required(["workdir", "out", "command"])


def run_record(workdir: pathlib.Path) -> dict:
  """What ``workdir`` holds of a run's results: ``config``, ``generator_steps``, ``train_seconds`` (the wall time of
  its last logged step), ``fid_curve`` (``{metric: [[step, value], ...]}``), ``evaluation_plan``, ``best`` and
  ``evaluations`` (``{file name: experiments.evaluate's results}``)."""
  lines = [json.loads(line) for line in (workdir / workdir_lib.METRICS_FILENAME).read_text().splitlines()]
  curves: dict[str, list[list[float]]] = {}
  for line in lines:
    for key, value in line.items():
      if key.startswith("fid_") and key != "fid_seconds":
        curves.setdefault(key, []).append([line["step"], value])
  plan = workdir / workdir_lib.EVALUATION_PLAN_FILENAME
  evaluations = {path.name: json.loads(path.read_text())
                 for path in sorted(workdir.glob("evaluation*.json")) if path.name != plan.name}
  return {"config": json.loads((workdir / workdir_lib.CONFIG_FILENAME).read_text()),
          "generator_steps": lines[-1]["step"] if lines else 0,
          "train_seconds": lines[-1].get("seconds") if lines else None,
          "fid_curve": curves,
          "evaluation_plan": json.loads(plan.read_text()) if plan.exists() else None,
          "best": periodic_eval.best_state_record(workdir),
          "evaluations": evaluations}


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  workdir = pathlib.Path(_WORKDIR.value)
  if not (workdir / workdir_lib.CONFIG_FILENAME).exists():
    cli.fail(f"--workdir: {workdir} holds no run (no {workdir_lib.CONFIG_FILENAME})")
  included = {}
  for item in _INCLUDE.value:
    name, _, path = item.partition("=")
    if not name or not path or not pathlib.Path(path).is_file():
      cli.fail(f"--include: {item!r} is not NAME=FILE with an existing FILE")
    included[name] = json.loads(pathlib.Path(path).read_text())
  record = {"command": _COMMAND.value, "commit": _COMMIT.value or subruns.git_commit(),
            "cpu": _CPU.value or host.cpu_description(), "date": _DATE.value or time.strftime("%Y-%m-%d"),
            "note": _NOTE.value, "workdir": str(workdir), **run_record(workdir), "included": included}
  out = pathlib.Path(_OUT.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(record, indent=2, default=str) + "\n")
  print(f"wrote {out}")


if __name__ == "__main__":
  cli.run(main)
