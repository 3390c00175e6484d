"""A new user's likely mistakes with the commands: each ends in one line on stderr naming the problem (``error: ...``),
exit status 2 for a mistake on the command line or in the config, 1 for a run that cannot go on, no traceback, and
nothing that was saved is lost."""

import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from wgan_gp_jax.data import prepare

from checkpoint_testing import IMAGE_CONFIG_FILE, REPO_ROOT, TOY_CONFIG_FILE, TOY_OVERRIDES, train_command

# Checkpoints at steps 5 and 10.
TINY_TOY = {**TOY_OVERRIDES, "num_steps": 10}
USAGE_ERROR, RUN_ERROR = 2, 1


def _run(arguments: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
  return subprocess.run(arguments, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def _command(module: str, *flags: str) -> list[str]:
  return [sys.executable, "-m", f"experiments.{module}", *flags]


def _assert_one_line_error(result: subprocess.CompletedProcess, status: int, *named: str,
                           progress_lines: bool = False) -> None:
  """Exit ``status``, and stderr one line, ``error: ...``, holding each of ``named``; with ``progress_lines``, after
  our INFO lines of what the command did (``12:00:00 I ...``), but no warning or error of a library."""
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert result.returncode == status, result.stderr[-3000:]
  *before, last = result.stderr.strip().splitlines()
  assert last.startswith("error: "), result.stderr[-3000:]
  assert all(progress_lines and re.fullmatch(r"\d\d:\d\d:\d\d I .*", line) for line in before), result.stderr[-3000:]
  for text in named:
    assert text in last, (text, last)


def _files(directory: pathlib.Path) -> dict[str, bytes]:
  """Every file under ``directory``, by relative path, with its bytes: what a test compares before and after."""
  return {str(path.relative_to(directory)): path.read_bytes()
          for path in sorted(directory.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory, command_env) -> pathlib.Path:
  """A tiny toy run, trained once for the module (checkpoints at steps 5 and 10). Tests copy it before a change."""
  workdir = tmp_path_factory.mktemp("toy_run")
  result = _run(train_command(TOY_CONFIG_FILE, workdir, TINY_TOY), command_env)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


@pytest.fixture
def toy_run_copy(toy_run, tmp_path) -> pathlib.Path:
  copy = tmp_path / "run"
  shutil.copytree(toy_run, copy)
  return copy


def _image_training(image_folder: pathlib.Path, tmp_path: pathlib.Path) -> list[str]:
  return train_command(IMAGE_CONFIG_FILE, tmp_path / "run", {"data.image_folder": image_folder,
                                                             "data.data_dir": tmp_path / "tfds"})


def test_train_with_a_missing_image_folder(tmp_path, command_env):
  missing = tmp_path / "nonexistent"
  result = _run(_image_training(missing, tmp_path), command_env)
  _assert_one_line_error(result, USAGE_ERROR, f"config.data.image_folder: image folder or zip not found: {missing}")
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_with_an_empty_image_folder(tmp_path, command_env):
  empty = tmp_path / "faces"
  empty.mkdir()
  result = _run(_image_training(empty, tmp_path), command_env)
  _assert_one_line_error(result, USAGE_ERROR, f"config.data.image_folder: no files in {empty}")


def test_train_with_an_image_folder_of_thumbnails_only(tmp_path, command_env):
  """Generated PNGs too small for the 32x32 crop: no usable image, every file named in the one line."""
  folder = tmp_path / "faces"
  folder.mkdir()
  for index in range(3):
    Image.fromarray(np.full((8, 8, 3), 40 * index, np.uint8)).save(folder / f"{index}.png")
  result = _run(_image_training(folder, tmp_path), command_env)
  _assert_one_line_error(result, USAGE_ERROR, f"config.data.image_folder: none of the 3 files in {folder} is a usable"
                         " image:", f"{folder}/2.png: image is too small (8x8)", progress_lines=True)
  assert not list((tmp_path / "tfds").rglob("1.0.0")), "nothing half-prepared is left"


def test_train_holding_out_every_image(face_folder, tmp_path, command_env):
  """celeba32 holds out 1,000 faces: on a folder of 64 that is every one. One line, and no work directory left."""
  prepare.prepare_image_folder(face_folder, resolution=32, data_dir=tmp_path / "tfds")  # its report is many lines
  result = _run(_image_training(face_folder, tmp_path), command_env)
  _assert_one_line_error(result, USAGE_ERROR,
                         f"config.data.held_out: 1000 keeps out every one of the 64 images of {face_folder}",
                         progress_lines=True)
  assert not (tmp_path / "run").exists()


def test_train_on_the_work_directory_of_another_config(toy_run_copy, command_env):
  """The 25-Gaussians config on an 8-Gaussians run: refused by key, and the run left as it was."""
  before = _files(toy_run_copy)
  result = _run(train_command("experiments/configs/toy_25gaussians.py", toy_run_copy, TINY_TOY), command_env)
  _assert_one_line_error(result, RUN_ERROR, f"cannot resume from the checkpoint at step 10 in {toy_run_copy}",
                         "data.toy_dataset: '8gaussians' in the checkpoint, '25gaussians' now;",
                         "train a different config in a new work directory.")
  assert _files(toy_run_copy) == before


@pytest.mark.parametrize("module, flags", [("sample", ["--out=out.npz"]), ("interpolate", ["--out=out.png"]),
                                           ("evaluate", [])])
def test_a_command_on_a_work_directory_that_is_not_a_run(module, flags, tmp_path, command_env):
  not_a_run = tmp_path / "not_a_run"
  not_a_run.mkdir()
  (not_a_run / "notes.txt").write_text("mine")
  flags = [flag.replace("=out", f"={tmp_path}/out") for flag in flags]
  result = _run(_command(module, f"--workdir={not_a_run}", *flags), command_env)
  _assert_one_line_error(result, USAGE_ERROR, f"no checkpoint in {not_a_run}/checkpoints: is {not_a_run} the work"
                         " directory of a run?")
  assert sorted(path.name for path in not_a_run.iterdir()) == ["notes.txt"]
  assert sorted(path.name for path in tmp_path.iterdir()) == ["not_a_run"], "nothing written"


@pytest.mark.parametrize("module, flags", [("sample", ["--out=out.npz"]), ("evaluate", ["--num_samples=100"])])
def test_a_command_at_a_step_the_run_does_not_keep(module, flags, toy_run_copy, command_env):
  before = _files(toy_run_copy)
  flags = [flag.replace("=out", f"={toy_run_copy.parent}/out") for flag in flags]
  result = _run(_command(module, f"--workdir={toy_run_copy}", "--step=7", *flags), command_env)
  _assert_one_line_error(result, USAGE_ERROR, f"no checkpoint at step 7 in {toy_run_copy}/checkpoints; there are"
                         " steps [5, 10]")
  assert _files(toy_run_copy) == before
  both = _run(_command(module, f"--workdir={toy_run_copy}", "--step=5", "--best", *flags), command_env)
  _assert_one_line_error(both, USAGE_ERROR, "--step and --best each choose a checkpoint: give one of them")


def test_sample_at_a_kept_step(toy_run, tmp_path, command_env):
  from wgan_gp_jax.runner import experiment

  result = _run(_command("sample", f"--workdir={toy_run}", "--step=5", "--num=8", "--seed=3",
                         f"--out={tmp_path / 'step5.npz'}"), command_env)
  assert result.returncode == 0, result.stderr[-3000:]
  samples = np.load(tmp_path / "step5.npz")["samples"]
  np.testing.assert_array_equal(samples, experiment.load_run(toy_run, step=5).sample(8, seed=3))
  assert not np.array_equal(samples, experiment.load_run(toy_run).sample(8, seed=3))  # not the latest, step 10


@pytest.mark.parametrize("module, flags", [("sample", ["--out=out.npz"]), ("interpolate", ["--out=out.png"]),
                                           ("evaluate", ["--num_samples=100"])])
def test_a_command_on_an_unreadable_best_checkpoint(module, flags, toy_run_copy, command_env):
  """``--best`` where ``best_checkpoint/`` holds a checkpoint whose files are cut short: status 1, and the checkpoint is
  left where it is (a command only reads a run)."""
  best = toy_run_copy / "best_checkpoint"
  shutil.copytree(toy_run_copy / "checkpoints" / "10", best / "10")
  for path in (best / "10").rglob("*"):
    if path.is_file() and path.stat().st_size > 0:
      path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
  before = _files(toy_run_copy)
  flags = [flag.replace("=out", f"={toy_run_copy.parent}/out") for flag in flags]
  result = _run(_command(module, f"--workdir={toy_run_copy}", "--best", *flags), command_env)
  _assert_one_line_error(result, RUN_ERROR, f"none of the checkpoints in {best} can be read: step 10: ")
  assert _files(toy_run_copy) == before
  assert not list(toy_run_copy.parent.glob("out.*"))
