"""Several hosts training one model: two processes on this machine (``jax.distributed`` on localhost, gloo CPU
collectives), each with 4 CPU devices, train as one process with 8 devices does: an image model (EMA and DiffAugment
on) through a preemption notice that reaches only one of them, a resume on the same two processes, and one on a single
process."""

import os
import pathlib
import signal
import socket
import subprocess
import time

import jax
import numpy as np
from PIL import Image

from checkpoint_testing import IMAGE_CONFIG_FILE, REPO_ROOT, image_overrides, subprocess_env, train_command
from wgan_gp_jax.runner import experiment
from wgan_gp_jax.data import prepare

NUM_STEPS = 10
# Adam's first steps move every parameter by about +-lr whatever its gradient's size, so gradients that are rounding
# noise (a sum that cancels, e.g. the critic's last bias) differ in sign between reduction orders. SGD keeps the
# comparison about what the processes change: the losses, gradients and batch statistics.
SGD = {"critic.name": "sgd", "critic.learning_rate": 0.01, "generator.name": "sgd", "generator.learning_rate": 0.01}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start_two_processes(workdir: pathlib.Path, env: dict[str, str], overrides: dict) -> list[subprocess.Popen]:
  port = _free_port()
  return [subprocess.Popen(
      train_command(IMAGE_CONFIG_FILE, workdir, overrides, f"--coordinator_address=localhost:{port}", "--num_processes=2",
                    f"--process_id={index}"),
      cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, text=True) for index in range(2)]


def _assert_close_runs(a: experiment.Run, b: experiment.Run) -> None:
  """Equal to the rounding of sums whose order depends on the process layout (gloo's all-reduce across processes,
  XLA's within one), grown by a few training steps: the largest state difference measured was 4.9e-6 (2026-12-03,
  batch norm by XLA) and 9.8e-6 (oneDNN's); the 8-bit samples then differ by at most one level in a few pixels."""
  assert int(a.state.step) == int(b.state.step)
  for x, y in zip(jax.tree.leaves(a.state), jax.tree.leaves(b.state)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=3e-5)
  samples, reference_samples = (run.sample(64, seed=1).astype(np.int32) for run in (a, b))
  assert np.max(np.abs(samples - reference_samples)) <= 1
  assert np.mean(samples != reference_samples) < 0.01


def _finish(processes: list[subprocess.Popen]) -> list[tuple[int, str]]:
  results = []
  for process in processes:
    try:
      _, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
      for other in processes:
        other.kill()
      raise
    results.append((process.returncode, stderr))
  return results


def _logged_lines(workdir: pathlib.Path) -> int:
  path = workdir / "metrics.jsonl"
  return path.read_text().count("\n") if path.exists() else 0


def _image_folder(folder: pathlib.Path, count: int = 64) -> pathlib.Path:
  """Random RGB images: a run's equality across process counts does not need faces (and runs without the shared data)."""
  folder.mkdir()
  rng = np.random.default_rng(0)
  for index in range(count):
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(folder / f"{index:03d}.png")
  return folder


def test_a_preempted_two_process_run_resumes_on_two_then_on_one_and_equals_one_process(compilation_cache, tmp_path):
  # Each process reads its slices of the global batches (data.pipeline), so the global batches, and the run, are
  # those of one process; the checkpoint's data position is the same for any number of processes.
  data_dir = tmp_path / "tfds"
  images = _image_folder(tmp_path / "images")
  prepare.prepare_image_folder(images, resolution=16, data_dir=data_dir)
  overrides = {**image_overrides(images, data_dir), **SGD, "num_steps": NUM_STEPS, "checkpoint.every": 5,
               "checkpoint.keep_period": 5}
  eight_devices, four_devices = (subprocess_env(compilation_cache, XLA_FLAGS=f"{os.environ['XLA_FLAGS']}"
                                                f" --xla_force_host_platform_device_count={count}") for count in (8, 4))
  one_process = subprocess.run(train_command(IMAGE_CONFIG_FILE, tmp_path / "one_process", overrides), cwd=REPO_ROOT,
                               env=eight_devices, capture_output=True, text=True, timeout=300)
  assert one_process.returncode == 0, one_process.stderr[-3000:]
  assert "training on 8 device(s), process 0 of 1" in one_process.stderr

  workdir = tmp_path / "preempted"
  processes = _start_two_processes(workdir, four_devices, overrides)
  deadline = time.monotonic() + 300
  while _logged_lines(workdir) < 2 and time.monotonic() < deadline and all(p.poll() is None for p in processes):
    time.sleep(0.01)
  # The notice reaches process 1 only; JAX's preemption service tells process 0, and both save the same step.
  processes[1].send_signal(signal.SIGTERM)
  results = _finish(processes)
  stopped_at = _logged_lines(workdir)
  assert 2 <= stopped_at <= NUM_STEPS - 3, results[0][1][-3000:]
  for status, stderr in results:
    assert status == 128 + signal.SIGTERM, stderr[-3000:]
    assert (f"stopped by SIGTERM after generator step {stopped_at}, whose checkpoint is saved in"
            f" {workdir / 'checkpoints'}") in stderr

  # The same two processes go on for two steps; then one process of 8 devices finishes the run.
  on_two = stopped_at + 2
  for index, (status, stderr) in enumerate(_finish(_start_two_processes(workdir, four_devices,
                                                                        {**overrides, "num_steps": on_two}))):
    assert status == 0, stderr[-3000:]
    assert f"resuming from the checkpoint at generator step {stopped_at}" in stderr
    assert f"training on 8 device(s), process {index} of 2" in stderr
  # Process 0 held the work directory's lock for both processes (neither refused the other) and released it.
  assert not (workdir / "lock.json").exists()
  resumed = subprocess.run(train_command(IMAGE_CONFIG_FILE, workdir, overrides), cwd=REPO_ROOT, env=eight_devices,
                           capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert (f"the checkpoint at step {on_two} was written by 2 process(es) and this run has 1: the data continues at the"
          " same global batch, with the same examples in the same order") in resumed.stderr

  # Logs come from process 0 alone: one line per step.
  assert _logged_lines(workdir) == NUM_STEPS
  for step in (5, NUM_STEPS):
    _assert_close_runs(experiment.load_run(workdir, step=step), experiment.load_run(tmp_path / "one_process", step=step))
