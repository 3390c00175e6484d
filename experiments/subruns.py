"""Pieces shared by the commands that train several runs in sub-directories of one work directory and evaluate them
side by side (``experiments.compare``, ``experiments.architecture_grid``): running a command of this repository,
training and evaluating each run once (a second start reuses what the first recorded), and the cells of their tables.

It defines no flags, so that commands and tests may import it.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Callable

import ml_collections

from experiments import cli
from wgan_gp_jax.runner import host
from wgan_gp_jax.runner import workdir as workdir_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
_EVALUATION_ARGS_FILE = "compare_evaluation_args.json"  # the arguments evaluation.json was made with


def run_config(workdir: pathlib.Path) -> ml_collections.ConfigDict:
  """The config a run was trained with, as its trainer wrote it."""
  return ml_collections.ConfigDict(json.loads((workdir / workdir_lib.CONFIG_FILENAME).read_text()))


def run_module(module: str, *args: str) -> float:
  """Runs ``python -m module args`` from the repository root; its wall time in seconds. A failure exits (``cli.fail``)
  naming the command and its status."""
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
  start = time.perf_counter()
  result = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env)
  if result.returncode:
    cli.fail(f"python -m {module} {' '.join(args)} exited with status {result.returncode}")
  return time.perf_counter() - start


def train_once(workdir: pathlib.Path, num_steps: int, train: Callable[[], object], *, timing_file: str) -> dict:
  """Calls ``train()`` (which trains or resumes the run in ``workdir`` to ``num_steps``) unless ``workdir/timing_file``
  records that the run reached ``num_steps``. Returns that record: ``seconds`` (the training wall time over all its
  starts, interrupted ones included), ``step``, and the ``cpu`` and ``commit`` of every start (joined by " + " where
  they differ)."""
  timing = workdir / timing_file
  recorded = json.loads(timing.read_text()) if timing.exists() else {"seconds": 0.0, "step": 0}
  if recorded["step"] >= num_steps:
    return recorded
  start, finished = time.perf_counter(), False
  try:
    train()
    finished = True
  finally:
    recorded = {"seconds": recorded["seconds"] + time.perf_counter() - start,
                "step": num_steps if finished else recorded["step"],
                "cpu": _joined(recorded.get("cpu"), host.cpu_description()),
                "commit": _joined(recorded.get("commit"), git_commit())}
    timing.parent.mkdir(parents=True, exist_ok=True)
    timing.write_text(json.dumps(recorded) + "\n")
  return recorded


def _joined(before: str | None, now: str | None) -> str | None:
  parts = before.split(" + ") if before else []
  return " + ".join(parts + [now] if now and now not in parts else parts) or None


def evaluate_once(workdir: pathlib.Path, *args: str) -> dict:
  """``experiments.evaluate``'s results for ``workdir`` with ``args``, from its ``evaluation.json`` where that was made
  with the same arguments (else evaluated now)."""
  path = workdir / workdir_lib.evaluation_filename()
  marker = workdir / _EVALUATION_ARGS_FILE
  if not (path.exists() and marker.exists() and json.loads(marker.read_text()) == list(args)):
    run_module("experiments.evaluate", f"--workdir={workdir}", *args)
    marker.write_text(json.dumps(list(args)) + "\n")
  return json.loads(path.read_text())


def optimizer_text(config: ml_collections.ConfigDict) -> str:
  """``Adam(lr, b1, b2)``, ``RMSProp(lr)`` or ``SGD(lr)``: one for both networks, or ``critic ..., generator ...``."""
  def describe(group):
    if group.name == "adam":
      return f"Adam({group.learning_rate:g}, {group.b1:g}, {group.b2:g})"
    if group.name == "rmsprop":
      return f"RMSProp({group.learning_rate:g})"
    return f"SGD({group.learning_rate:g})"
  critic, generator = describe(config.critic), describe(config.generator)
  return critic if critic == generator else f"critic {critic}, generator {generator}"


def format_number(value: float | None, digits: int) -> str:
  """``value`` with ``digits`` decimals; "" for None."""
  return "" if value is None else f"{value:.{digits}f}"


def kid_text(results: dict) -> str:
  """``kid ± kid_std``, or "" where there is no KID."""
  return "" if results.get("kid") is None else f"{results['kid']:.4f} ± {results.get('kid_std', 0):.4f}"


def metric_cells(results: dict, with_swd: bool) -> list[str]:
  """FID, KID, precision, recall (and SWD x1e3) of ``experiments.evaluate``'s results, as table cells."""
  cells = [format_number(results.get("fid"), 1), kid_text(results), format_number(results.get("precision"), 3),
           format_number(results.get("recall"), 3)]
  return cells + [format_number(results.get("swd"), 2)] if with_swd else cells


def git_commit() -> str | None:
  """The checkout's commit (``git rev-parse HEAD``), or None where it cannot be read."""
  try:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=30)
  except (OSError, subprocess.SubprocessError):
    return None
  return result.stdout.strip() or None if result.returncode == 0 else None
