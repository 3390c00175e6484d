import json
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
from PIL import Image

from experiments import interpolate
from experiments.configs import celeba32, celeba64
from wgan_gp_jax import configuration
from wgan_gp_jax.runner import experiment

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(env: dict[str, str], *args: str) -> str:
  result = subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  return result.stdout


def test_celeba64_config_trains_a_few_steps_on_cpu(face_folder, tmp_path):
  config = configuration.override(celeba64.get_config(), {
      "data.image_folder": str(face_folder), "data.data_dir": str(tmp_path / "tfds"), "model.width": 4,
      "batch_size": 8, "num_steps": 2, "logging.figure_every": 2, "checkpoint.every": 2, "logging.log_every": 1})
  run = experiment.train_and_evaluate(config, tmp_path / "run")
  assert int(run.state.step) == 2
  samples = run.sample(6, seed=0)
  assert samples.shape == (6, 64, 64, 3) and samples.dtype == np.uint8
  grid = np.asarray(Image.open(tmp_path / "run" / "samples" / "step_000002.png"))
  assert grid.shape[-1] == 3 and grid.shape[0] >= 8 * 64  # 64 fixed samples of 64 pixels, scaled x2
  lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 2 and all(np.isfinite(v) for v in json.loads(lines[-1]).values())


def test_train_sample_and_interpolate_commands_on_faces(face_folder, command_env, tmp_path):
  workdir = tmp_path / "run"
  _run(command_env, "experiments.train", "--config", "experiments/configs/celeba32.py", f"--workdir={workdir}",
       f"--config.data.image_folder={face_folder}", f"--config.data.data_dir={tmp_path / 'tfds'}",
       "--config.data.held_out=8", "--config.model.width=4", "--config.evaluation.every=0",
       "--config.batch_size=8", "--config.n_critic=2", "--config.num_steps=3")
  _run(command_env, "experiments.sample", f"--workdir={workdir}", "--num=10", "--seed=1",
       f"--out={tmp_path / 'faces.npz'}")
  samples = np.load(tmp_path / "faces.npz")["samples"]
  assert samples.shape == (10, 32, 32, 3) and samples.dtype == np.uint8
  np.testing.assert_array_equal(samples, experiment.load_run(workdir).sample(10, seed=1))
  _run(command_env, "experiments.sample", f"--workdir={workdir}", "--num=16", "--seed=1",
       f"--out={tmp_path / 'grid.png'}")
  assert np.asarray(Image.open(tmp_path / "grid.png")).shape == (4 * 34 + 2, 4 * 34 + 2, 3)
  _run(command_env, "experiments.interpolate", f"--workdir={workdir}", "--seed=2", "--faces=3", "--steps=5",
       f"--out={tmp_path / 'morph.png'}")
  strip = Image.open(tmp_path / "morph.png")
  assert strip.size == ((5 * 34 + 2) * 4, (3 * 34 + 2) * 4)  # 3 rows of 5 faces, scaled to about 128 pixels
  gif = Image.open(tmp_path / "morph.gif")
  assert gif.n_frames == 3 * 4
  _run(command_env, "experiments.critic_slopes", f"--workdirs={workdir}", "--num=20", f"--out={tmp_path / 'slopes.json'}")
  slopes = json.loads((tmp_path / "slopes.json").read_text())
  assert slopes["command"].startswith("python -m experiments.critic_slopes --workdirs=") and slopes["cpu"]
  (result,) = slopes["runs"]
  assert result["objective"] == "wgan_gp" and result["step"] == 3 and result["num"] == 20
  assert len(result["whole_batch_norms"]) == 2  # 20 interpolates make two batches of the run's 8
  assert 0 < result["per_example"]["min"] <= result["per_example"]["p50"] <= result["per_example"]["max"]
  assert (tmp_path / "slopes.png").stat().st_size > 0
  failed = subprocess.run([sys.executable, "-m", "experiments.critic_slopes", f"--workdirs={workdir}", "--num=60",
                           f"--out={tmp_path / 'too_many.json'}"], cwd=REPO_ROOT, env=command_env, capture_output=True,
                          text=True, timeout=600)
  assert failed.returncode == 2 and "--num=60" in failed.stderr and "56 training images" in failed.stderr


def test_slerp_keeps_endpoints_and_norms():
  a, b = jnp.array([3.0, 0.0]), jnp.array([0.0, 3.0])
  path = interpolate.slerp(a, b, jnp.linspace(0, 1, 5))
  np.testing.assert_allclose(path[0], a, atol=1e-6)
  np.testing.assert_allclose(path[-1], b, atol=1e-6)
  np.testing.assert_allclose(jnp.linalg.norm(path, axis=1), 3.0, rtol=1e-6)
  latents = interpolate.interpolation_latents(jnp.stack([a, b, -a]), 4)
  assert latents.shape == (3, 4, 2)
  np.testing.assert_allclose(latents[2, -1], a, atol=1e-6)  # the last row returns to the first face


def test_celeba32_defaults_point_at_the_shared_faces():
  config = celeba32.get_config()
  assert config.data.resolution == 32 and config.kind == "image"
  assert (REPO_ROOT / config.data.image_folder).resolve() == (REPO_ROOT.parent / "shared" / "data" / "celeba_10k" /
                                                         "images").resolve()
