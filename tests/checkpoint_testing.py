"""What the checkpoint, signal and multi-process tests share: tiny configs given as command-line overrides, the
training command, and comparisons of runs."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import ml_collections
import numpy as np

from experiments.configs import celeba32, toy_8gaussians
from wgan_gp_jax import configuration
from wgan_gp_jax.runner import experiment

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TOY_CONFIG_FILE = "experiments/configs/toy_8gaussians.py"
IMAGE_CONFIG_FILE = "experiments/configs/celeba32.py"

# The paper's toy setting (linear learning-rate decay included), small enough for a few seconds on a CPU.
TOY_OVERRIDES = {"model.width": 16, "batch_size": 32, "num_steps": 40, "logging.log_every": 5, "checkpoint.every": 5,
                 "logging.figure_every": 10**6, "logging.num_fixed_samples": 16}


def image_overrides(face_folder: pathlib.Path, data_dir: pathlib.Path) -> dict:
  """A DCGAN of width 8 on 16x16 faces (8 of the 64 held out), with a generator EMA and DiffAugment: big enough to have
  batch norm and every part of the state and of the random streams, small enough for the tests; no FID while training
  (celeba32's would evaluate the last step)."""
  return {"data.image_folder": str(face_folder), "data.data_dir": str(data_dir), "data.resolution": 16, "data.held_out": 8,
          "model.width": 8, "batch_size": 8, "n_critic": 2, "num_steps": 30, "logging.log_every": 1,
          "checkpoint.every": 15, "checkpoint.keep_period": 0, "logging.figure_every": 10**6, "logging.num_fixed_samples": 16,
          "ema.enabled": True, "ema.half_life_kimg": 0.1, "augment.policy": "color,translation,cutout",
          "evaluation.every": 0}


def toy_config(**overrides) -> ml_collections.ConfigDict:
  return configuration.override(toy_8gaussians.get_config(), {**TOY_OVERRIDES, **overrides})


def image_config(face_folder: pathlib.Path, data_dir: pathlib.Path, **overrides) -> ml_collections.ConfigDict:
  return configuration.override(celeba32.get_config(), {**image_overrides(face_folder, data_dir), **overrides})


def subprocess_env(compilation_cache: pathlib.Path, **extra: str) -> dict[str, str]:
  """The environment of a training process: the repository on the path, and the tests' compilation cache."""
  return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu",
          "JAX_COMPILATION_CACHE_DIR": str(compilation_cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
          **extra}


def train_command(config_file: str, workdir: pathlib.Path, overrides: dict, *extra_flags: str,
                  slow_commits: bool = False) -> list[str]:
  """``python -m experiments.train`` with ``overrides`` as ``--config.KEY=VALUE`` flags; with ``slow_commits``, the
  same through ``train_with_slow_commits.py``."""
  program = [str(REPO_ROOT / "tests" / "train_with_slow_commits.py")] if slow_commits else ["-m", "experiments.train"]
  return [sys.executable, *program, f"--config={config_file}", f"--workdir={workdir}",
          *(f"--config.{key}={value}" for key, value in overrides.items()), *extra_flags]


def metrics_without_time(workdir: pathlib.Path) -> list[dict]:
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  for record in records:
    del record["seconds"]
  return records


def assert_same_state(actual, expected) -> None:
  """Bit-identical states: every parameter, statistic, optimizer moment, the step and the key."""
  actual_leaves, actual_structure = jax.tree.flatten(jax.device_get(actual))
  expected_leaves, expected_structure = jax.tree.flatten(jax.device_get(expected))
  assert actual_structure == expected_structure
  for a, e in zip(actual_leaves, expected_leaves):
    np.testing.assert_array_equal(a, e)


def assert_same_run(workdir: pathlib.Path, reference: experiment.Run, reference_metrics: list[dict]) -> None:
  """The run in ``workdir`` ended exactly as ``reference``: state, samples and logged metrics."""
  run = experiment.load_run(workdir)
  assert_same_state(run.state, reference.state)
  np.testing.assert_array_equal(run.sample(64, seed=1), reference.sample(64, seed=1))
  assert metrics_without_time(workdir) == reference_metrics
