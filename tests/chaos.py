r"""Chaos test: a short face run (EMA, DiffAugment, FID while training) interrupted at random moments, restarted until
it finishes, must end bit-identical to the uninterrupted run with no unreadable checkpoint left behind.

  python tests/chaos.py --trials 20 --seed 0 --report runs/chaos/report.json [--processes 2] [--dtype float32]

Each trial starts the run in a fresh work directory; at a random moment of a random kind, a random process of it
receives SIGKILL or SIGTERM (chosen at random):

  step        a moment after a step of the run drawn uniformly from what is left of it;
  save        after that step, while an asynchronous save of the process is being committed (commits are slowed by
              half a second);
  evaluation  after that step, while the process computes an FID (a stand-in Inception that takes half a second);

then the run is restarted, and interrupted again with probability 1/2, until it finishes. ``--dtype`` is the model's
(``bfloat16``, the recipe's, by default; ``float32`` computes the convolutions with the CPU kernels: oneDNN, Winograd). With ``--processes 2``
the run is 2 processes x 4 devices (``jax.distributed`` on localhost) and the uninterrupted run is too; when one
process is killed the other is killed as well (a pod's job is restarted whole), a SIGTERM reaches one process only.
The trial passes if the final state, the samples, ``metrics.jsonl`` (but its times) and the best-FID record equal
the uninterrupted run's, no restart began again from step 0 after a checkpoint was complete, and no checkpoint
was set aside as unreadable or left half-written. The report lists every interruption (trial, kind, signal,
process, the steps logged and checkpointed at that moment) and the outcome.

The suite runs a few trials (``tests/test_chaos.py``); the figure in docs/checkpoints.md comes from this command.

With ``--as_trainer`` this file is the training command itself (``experiments.train`` with the slow commits and the
stand-in Inception); the trials start it that way.
"""

import argparse
import json
import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

TESTS = pathlib.Path(__file__).resolve().parent
REPO_ROOT = TESTS.parent
KINDS = ("step", "save", "evaluation")
SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM}
EVALUATION_MARKER = "chaos_evaluating"
EVALUATION_SECONDS = 0.5
_TMP_SUFFIX = ".orbax-checkpoint-tmp"


def overrides(face_folder: pathlib.Path, data_dir: pathlib.Path, dtype: str = "bfloat16") -> dict:
  """The run every trial makes: the resume tests' small face model in ``dtype``, with FID every 6 steps."""
  sys.path.insert(0, str(TESTS))
  from checkpoint_testing import image_overrides  # noqa: E402  (the tests' own helpers)

  return {**image_overrides(face_folder, data_dir), "num_steps": 24, "checkpoint.every": 4, "model.dtype": dtype,
          "evaluation.every": 6, "evaluation.num_samples": 16, "evaluation.max_time_fraction": 1.0}


# --- the trainer (a child process) ---

def _stand_in_fid(workdir: pathlib.Path):
  """``periodic_eval.load_fid_model`` with features that are a fixed projection of the pixels, slowed down, and
  that mark the work directory while they run (so that the chaos driver can interrupt an evaluation)."""
  import numpy as np

  from wgan_gp_jax.runner import periodic_eval

  def load(config):
    projection = np.random.default_rng(0).standard_normal((16 * 16 * 3, 8)).astype(np.float32)

    def features(images):
      marker = workdir / f"{EVALUATION_MARKER}.{os.getpid()}"
      marker.write_text("")
      time.sleep(EVALUATION_SECONDS)
      result = images.reshape(len(images), -1).astype(np.float32) @ projection / 255.0
      marker.unlink()
      return result

    return periodic_eval.FIDModel(features, np.zeros(8), np.eye(8), "chaos stand-in")

  return load


def run_trainer(argv: list[str]) -> None:
  import runpy

  sys.path.insert(0, str(TESTS))
  import train_with_slow_commits  # noqa: E402

  from wgan_gp_jax.runner import periodic_eval

  workdir = next(pathlib.Path(arg.split("=", 1)[1]) for arg in argv if arg.startswith("--workdir="))
  train_with_slow_commits.slow_down_commits()
  periodic_eval.load_fid_model = _stand_in_fid(workdir.absolute())
  sys.argv = ["experiments.train", *argv]
  runpy.run_module("experiments.train", run_name="__main__")


# --- the driver ---

def _env(compilation_cache: pathlib.Path, devices: int) -> dict[str, str]:
  return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu",
          "JAX_COMPILATION_CACHE_DIR": str(compilation_cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
          "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start(workdir: pathlib.Path, settings: dict, processes: int, cache: pathlib.Path,
           log_dir: pathlib.Path) -> list[subprocess.Popen]:
  command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--as_trainer",
             "--config=experiments/configs/celeba32.py", f"--workdir={workdir}",
             *(f"--config.{key}={value}" for key, value in settings.items())]
  port = _free_port()
  extra = [[]] if processes == 1 else [
      [f"--coordinator_address=localhost:{port}", f"--num_processes={processes}", f"--process_id={index}"]
      for index in range(processes)]
  started = []
  for index, flags in enumerate(extra):
    log = (log_dir / f"process{index}-{time.monotonic_ns()}.log").open("w")
    started.append(subprocess.Popen(command + flags, cwd=REPO_ROOT, env=_env(cache, 8 // processes), stdout=log,
                                    stderr=subprocess.STDOUT))
  return started


def _logged_steps(workdir: pathlib.Path) -> list[int]:
  path = workdir / "metrics.jsonl"
  lines = path.read_text().split("\n")[:-1] if path.exists() else []
  return [json.loads(line)["step"] for line in lines]


def _checkpoint_steps(workdir: pathlib.Path) -> list[int]:
  directory = workdir / "checkpoints"
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


def _unfinished_saves(workdir: pathlib.Path) -> set[str]:
  directory = workdir / "checkpoints"
  return {p.name for p in directory.glob(f"*{_TMP_SUFFIX}*")} if directory.is_dir() else set()


def _wait(condition, processes: list[subprocess.Popen], timeout: float = 300) -> bool:
  """True once ``condition()`` holds; False if the run ended (or timed out) first."""
  deadline = time.monotonic() + timeout
  while not condition():
    if any(p.poll() is not None for p in processes) or time.monotonic() > deadline:
      return False
    time.sleep(0.005)
  return True


def _moment_reached(kind: str, workdir: pathlib.Path, processes: list[subprocess.Popen], rng: random.Random,
                    num_steps: int) -> bool:
  """Waits for a moment of ``kind``, made by these processes, at a random point of the rest of the run; False if
  the run finished first."""
  resumes_from = max(_checkpoint_steps(workdir), default=0)
  if resumes_from + 1 >= num_steps:
    return False
  # The kind's moment comes once this process has logged this step (one it computed, past its checkpoint).
  target = rng.randrange(resumes_from + 1, num_steps)
  before = _unfinished_saves(workdir)
  # Lines a killed predecessor logged past the checkpoint are not this process's: wait until it has dropped them.
  if not _wait(lambda: max(_logged_steps(workdir), default=0) <= resumes_from, processes):
    return False
  if not _wait(lambda: max(_logged_steps(workdir), default=0) >= target, processes):
    return False
  if kind == "save":
    reached = _wait(lambda: bool(_unfinished_saves(workdir) - before), processes)
  elif kind == "evaluation":
    pids = {str(p.pid) for p in processes}
    reached = _wait(lambda: any(m.suffix[1:] in pids for m in workdir.glob(f"{EVALUATION_MARKER}.*")), processes)
  else:
    reached = True
  time.sleep(rng.uniform(0, 0.3))
  return reached


def _interrupt(processes: list[subprocess.Popen], victim: int, signal_name: str) -> None:
  processes[victim].send_signal(SIGNALS[signal_name])
  if signal_name == "SIGKILL":  # The job is restarted whole: the other processes go too.
    for process in processes:
      if process.poll() is None:
        process.kill()
  for process in processes:
    try:
      process.wait(timeout=120)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()


def _wait_job(processes: list[subprocess.Popen], grace: float = 60.0) -> list[int]:
  """The exit statuses of one job's processes. When one fails, the others get ``grace`` seconds and are then killed,
  as a cluster scheduler ends a job whose task died (a peer blocked in a collective would otherwise wait forever)."""
  failed_at = None
  while any(p.poll() is None for p in processes):
    if failed_at is None and any(p.poll() not in (None, 0) for p in processes):
      failed_at = time.monotonic()
    if failed_at is not None and time.monotonic() - failed_at > grace:
      for process in processes:
        if process.poll() is None:
          process.kill()
    time.sleep(0.5)
  return [p.wait() for p in processes]


def _resumed_steps(log_dir: pathlib.Path) -> list[int | None]:
  import re

  steps = []
  for log in sorted(log_dir.glob("process0-*.log"), key=lambda p: int(p.stem.split("-")[1])):
    # "resuming from the checkpoint at generator step N", or, stopped at the last step, "the checkpoint is at ..."
    found = re.search(r"(?:resuming from the checkpoint|the checkpoint is) at generator step (\d+)", log.read_text())
    steps.append(int(found.group(1)) if found else None)
  return steps


def _outcome(workdir: pathlib.Path, reference: pathlib.Path) -> list[str]:
  """What differs from the uninterrupted run, or is left behind; empty when the trial passed."""
  import jax
  import numpy as np

  from wgan_gp_jax.runner import experiment, periodic_eval

  problems = []

  def metrics(directory):
    records = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in record.items() if k not in ("seconds", "fid_seconds")} for record in records]

  if metrics(workdir) != metrics(reference):
    problems.append("metrics.jsonl differs")
  run, expected = experiment.load_run(workdir), experiment.load_run(reference)
  for a, b in zip(jax.tree.leaves(jax.device_get(run.state)), jax.tree.leaves(jax.device_get(expected.state))):
    if not np.array_equal(a, b):
      problems.append("the state differs")
      break
  if not np.array_equal(run.sample(16, seed=1), expected.sample(16, seed=1)):
    problems.append("samples differ")
  if periodic_eval.best_state_record(workdir) != periodic_eval.best_state_record(reference):
    problems.append("the best-FID record differs")
  if (workdir / "unreadable_checkpoints").exists():
    problems.append("a checkpoint was set aside as unreadable")
  if _unfinished_saves(workdir):
    problems.append(f"half-written saves left: {sorted(_unfinished_saves(workdir))}")
  return problems


def run_trials(*, trials: int, seed: int, processes: int, face_folder: pathlib.Path, root: pathlib.Path,
               dtype: str = "bfloat16", kinds: tuple[str, ...] = KINDS, max_restarts: int = 8,
               again_probability: float = 0.5) -> dict:
  """Runs the trials in ``root``; the report (a dict). Each restart is interrupted again with ``again_probability``,
  at most ``max_restarts`` times."""
  rng = random.Random(seed)
  cache = root / "compilation_cache"
  data_dir = root / "tfds"
  settings = overrides(face_folder, data_dir, dtype)
  from wgan_gp_jax.data import prepare

  prepare.prepare_image_folder(face_folder, resolution=settings["data.resolution"], data_dir=data_dir)
  reference = root / f"uninterrupted_{processes}p_{dtype}"
  if not (reference / "checkpoints").is_dir() or _checkpoint_steps(reference)[-1:] != [settings["num_steps"]]:
    shutil.rmtree(reference, ignore_errors=True)
    (root / "logs" / "uninterrupted").mkdir(parents=True, exist_ok=True)
    started = _start(reference, settings, processes, cache, root / "logs" / "uninterrupted")
    if any(_wait_job(started)):
      raise RuntimeError(f"the uninterrupted run failed: see {root / 'logs' / 'uninterrupted'}")

  report = {"trials": [], "processes": processes, "dtype": dtype, "seed": seed,
            "settings": {k: str(v) for k, v in settings.items()}}
  for trial in range(trials):
    workdir = root / f"trial_{trial:03d}"
    log_dir = root / "logs" / workdir.name
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    interruptions, statuses = [], []
    for attempt in range(max_restarts + 1):
      started = _start(workdir, settings, processes, cache, log_dir)
      interrupt = attempt == 0 or (attempt < max_restarts and rng.random() < again_probability)
      if interrupt:
        kind, signal_name, victim = rng.choice(kinds), rng.choice(sorted(SIGNALS)), rng.randrange(processes)
        if (_moment_reached(kind, workdir, started, rng, settings["num_steps"])
            and all(p.poll() is None for p in started)):
          interruptions.append({"attempt": attempt, "kind": kind, "signal": signal_name, "process": victim,
                                "logged_step": max(_logged_steps(workdir), default=0),
                                "checkpoints": _checkpoint_steps(workdir)})
          _interrupt(started, victim, signal_name)
          statuses.append([p.returncode for p in started])
          continue
      statuses.append(_wait_job(started))
      if all(status == 0 for status in statuses[-1]):
        break
    resumed = _resumed_steps(log_dir)
    problems = []
    if not all(status == 0 for status in statuses[-1]):
      problems.append(f"the run did not finish: exit statuses {statuses}")
    else:
      problems += _outcome(workdir, reference)
    # A start after a complete checkpoint must resume from it, never from step 0.
    for interruption in interruptions:
      after = interruption["attempt"] + 1
      if interruption["checkpoints"] and after < len(resumed) and not resumed[after]:
        problems.append(f"start {after + 1} began from step 0 though a checkpoint was complete")
    report["trials"].append({"trial": trial, "interruptions": interruptions, "exit_statuses": statuses,
                             "resumed_from": resumed, "problems": problems, "passed": not problems})
    print(f"trial {trial}: {len(interruptions)} interruption(s) "
          f"{[(i['kind'], i['signal'], i['logged_step']) for i in interruptions]}, resumed from {resumed[1:]}: "
          f"{'passed' if not problems else 'FAILED ' + '; '.join(problems)}", flush=True)
    shutil.rmtree(workdir, ignore_errors=True)  # passed or not, the report says what happened; keep the disk free
  trials_passed = sum(t["passed"] for t in report["trials"])
  report["summary"] = {"trials": trials, "passed": trials_passed, "divergent": trials - trials_passed,
                       "interruptions": sum(len(t["interruptions"]) for t in report["trials"]),
                       "by_kind": {kind: sum(i["kind"] == kind for t in report["trials"] for i in t["interruptions"])
                                   for kind in kinds},
                       "by_signal": {name: sum(i["signal"] == name for t in report["trials"]
                                               for i in t["interruptions"]) for name in sorted(SIGNALS)}}
  return report


def main() -> None:
  if len(sys.argv) > 1 and sys.argv[1] == "--as_trainer":
    run_trainer(sys.argv[2:])
    return
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--trials", type=int, default=20)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--processes", type=int, choices=(1, 2), default=1)
  parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
  parser.add_argument("--faces", type=pathlib.Path, default=REPO_ROOT.parent / "shared" / "data" / "celeba_10k" /
                      "images", help="a folder of face images (the first 64 are used)")
  parser.add_argument("--root", type=pathlib.Path, default=None, help="working folder (default: a temporary one)")
  parser.add_argument("--report", type=pathlib.Path, default=None, help="write the report here as JSON")
  args = parser.parse_args()
  sys.path.insert(0, str(REPO_ROOT))
  root = args.root or pathlib.Path(tempfile.mkdtemp(prefix="chaos-"))
  faces = root / "faces"
  if not faces.is_dir():
    faces.mkdir(parents=True)
    for path in sorted(args.faces.glob("*.jpg"))[:64]:
      shutil.copy(path, faces)
  start = time.perf_counter()
  report = run_trials(trials=args.trials, seed=args.seed, processes=args.processes, face_folder=faces, root=root,
                      dtype=args.dtype)
  report["summary"]["wall_seconds"] = round(time.perf_counter() - start, 1)
  from experiments import subruns
  from wgan_gp_jax.runner import host

  report["command"] = " ".join(["python", "tests/chaos.py", *sys.argv[1:]])
  report["commit"], report["cpu"] = subruns.git_commit(), host.cpu_description()
  report["date"] = time.strftime("%Y-%m-%d")
  print(json.dumps(report["summary"], indent=2))
  if args.report:
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
  sys.exit(0 if report["summary"]["divergent"] == 0 else 1)


if __name__ == "__main__":
  main()
