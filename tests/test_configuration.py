"""Config groups: unknown keys named with the nearest valid one, bad values refused in one line before anything is
compiled, on the command line with exit status 2; checkpoints of the flat configs before groups refused and kept."""

import os
import pathlib
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from experiments.configs import celeba32, celeba64, celeba128, common, toy_8gaussians
from wgan_gp_jax import configuration
from wgan_gp_jax.runner import checkpoint, experiment
from wgan_gp_jax import train as train_lib
from wgan_gp_jax.models import build_models

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _init_state(config, models):
  parts = configuration.training_parts(config)
  return train_lib.init_state(models, parts.optimizers, seed=config.seed, ema=parts.ema is not None)


def test_every_config_file_is_valid():
  for path in sorted((REPO_ROOT / "experiments" / "configs").glob("*.py")):
    if path.name in ("__init__.py", "common.py"):
      continue
    module = {}
    exec(compile(path.read_text(), str(path), "exec"), module)
    if "get_variants" in module:  # variants of celeba32 for experiments.compare --variants
      for name, overrides in module["get_variants"]().items():
        config = configuration.override(celeba32.get_config(), overrides)
        configuration.validate(config)
        every = config.checkpoint.every
        assert config.num_steps % every == 0 and config.checkpoint.keep_period % every == 0, name
    else:
      configuration.validate(module["get_config"]())


def test_override_names_the_nearest_valid_key():
  config = toy_8gaussians.get_config()
  with pytest.raises(configuration.ConfigError, match="unknown config key 'objective.gp_weigth'; did you mean"
                     " 'objective.gp_weight'\\?"):
    configuration.override(config, {"objective.gp_weigth": 1.0})
  # A key of the flat configs before groups points to where it went.
  with pytest.raises(configuration.ConfigError, match="did you mean 'critic.learning_rate'"):
    configuration.override(config, {"learning_rate": 1e-3})
  assert configuration.override(config, {"objective.gp_weight": 1.0}).objective.gp_weight == 1.0
  assert config.objective.gp_weight == 0.1  # the original is unchanged


def test_nested_configs_flatten_to_dotted_keys_and_back():
  config = toy_8gaussians.get_config()
  items = configuration.dotted_items(config)
  assert items["objective.gp_weight"] == config.objective.gp_weight and items["seed"] == config.seed
  assert configuration.dotted_items(checkpoint.config_as_json(config)) == {
      key: list(value) if isinstance(value, tuple) else value for key, value in items.items()}
  tree = {"model": {"width": 8}}
  configuration.set_dotted(tree, "model.dtype", "float32")
  configuration.set_dotted(tree, "evaluation.every", 0)
  assert tree == {"model": {"width": 8, "dtype": "float32"}, "evaluation": {"every": 0}}


def test_augmentation_ratios_from_0_to_1_inclusive_make_a_run():
  for ratio in (0.0, 1.0):
    configuration.validate(configuration.override(celeba32.get_config(), {
        "augment.policy": "translation,cutout", "augment.translation_ratio": ratio, "augment.cutout_ratio": ratio}))


def test_validate_refuses_a_key_added_to_a_group():
  config = toy_8gaussians.get_config()
  config.ema.half_life = 3.0
  with pytest.raises(configuration.ConfigError, match="unknown config key 'ema.half_life'; did you mean"
                     " 'ema.half_life_kimg'"):
    configuration.validate(config)


@pytest.mark.parametrize("overrides, message", [
    ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
    ({"batch_size": -8}, "batch_size must be a positive integer, got -8"),
    ({"n_critic": 0}, "n_critic must be a positive integer, got 0"),
    ({"objective.name": "wgan-gp"}, "unknown objective.name 'wgan-gp'; did you mean 'wgan_gp'?"),
    ({"critic.name": "adamw"}, "unknown critic.name 'adamw'; did you mean 'adam'?"),
    ({"generator.learning_rate": 0.0}, "generator.learning_rate must be positive, got 0.0"),
    ({"model.name": "stylegan"}, "unknown model.name 'stylegan'"),
    ({"augment.policy": "color,rotation"}, "rotation"),
    ({"objective.clip": -0.01}, "objective.clip must be positive"),
    ({"augment.translation_ratio": 1.01}, "augment.translation_ratio must be in [0, 1], got 1.01"),
    ({"augment.cutout_ratio": -0.1}, "augment.cutout_ratio must be in [0, 1], got -0.1"),
    ({"ema.half_life_kimg": -1.0}, "ema.half_life_kimg must be >= 0, got -1.0"),
    ({"data.resolution": 48}, "resolution must be 4 * 2^k"),
    ({"model.dtype": "float16"}, "unknown model.dtype 'float16'"),
    ({"model.param_dtype": "bfloat16"}, "model.param_dtype='bfloat16' is not supported"),
    ({"checkpoint.every": 500, "checkpoint.keep_period": 2800},
     "checkpoint.keep_period=2800 must be a multiple of checkpoint.every=500: only steps that are saved can be kept"),
])
def test_bad_values_are_one_line_errors_naming_the_key(overrides, message):
  config = configuration.override(celeba32.get_config(), overrides)
  with pytest.raises(configuration.ConfigError) as error:
    configuration.validate(config)
  assert message in str(error.value) and "\n" not in str(error.value)


def test_a_batch_that_the_devices_cannot_share_is_refused_before_compiling(tmp_path):
  config = configuration.override(toy_8gaussians.get_config(), {"batch_size": 30})
  with pytest.raises(configuration.ConfigError, match=r"batch_size=30 must be divisible by the number of devices \(4\)"):
    configuration.validate(config, num_devices=4)
  with pytest.raises(configuration.ConfigError, match="batch_size must be a positive integer"):
    experiment.train_and_evaluate(configuration.override(config, {"batch_size": 0}), tmp_path / "run")
  assert not (tmp_path / "run").exists()  # refused before the work directory was touched


def _train(*flags: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
  return subprocess.run([sys.executable, "-m", "experiments.train", *flags], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("flags, message", [
    (["--config.objective.gp_weigth=3"],
     "error: --config.objective.gp_weigth: unknown config key 'objective.gp_weigth'; did you mean"
     " 'objective.gp_weight'?"),
    (["--config.objectiv.name=hinge"],
     "error: --config.objectiv.name: unknown config key 'objectiv.name'; did you mean 'objective.name'?"),
    (["--config.batch_size=0"], "error: config: batch_size must be a positive integer, got 0"),
    (["--config.objective.name=hinj"],
     "error: config: unknown objective.name 'hinj'; did you mean 'hinge'? (valid: wgan_gp, wgan_lp,"
     " wgan_gp_whole_batch, wgan_clip, hinge, ns, lsgan, ns_r1, dragan)"),
    (["--config.batch_size=abc"], "error: flag --config.batch_size=abc:"),
])
def test_command_line_mistakes_are_one_line_and_exit_status_2(tmp_path, flags, message):
  result = _train("--config=experiments/configs/toy_8gaussians.py", f"--workdir={tmp_path / 'run'}", *flags)
  assert result.returncode == 2, result.stderr[-3000:]
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith(message), result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_missing_config_file_is_one_line(tmp_path):
  result = _train("--config=experiments/configs/no_such.py", f"--workdir={tmp_path}")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == "error: --config: no config file 'experiments/configs/no_such.py'"


def test_checkpoints_of_flat_configs_are_refused_and_kept(tmp_path):
  config = configuration.override(common.toy_config("8gaussians"), {"model.width": 8, "batch_size": 8})
  models = build_models(config)
  state = jax.device_put(_init_state(config, models), train_lib.replicated(train_lib.make_mesh(1)))
  flat = ml_collections.ConfigDict({"kind": "toy", "model": "toy_mlp", "width": 8, "learning_rate": 2e-3,
                                    "num_steps": 5, "seed": 0})
  with checkpoint.Checkpoints(tmp_path) as checkpoints:
    checkpoints.save(5, state, flat)
  for load in (lambda: experiment.load_run(tmp_path), lambda: experiment.train_and_evaluate(config, tmp_path)):
    with pytest.raises(checkpoint.ConfigMismatchError, match="was made by an earlier wgan_gp_jax whose config had no"
                       " groups.*git checkout 53f4924"):
      load()
  assert (tmp_path / "checkpoints" / "5").is_dir() and not (tmp_path / "unreadable_checkpoints").exists()


def test_checkpoints_made_before_model_dtype_read_as_float32(tmp_path):
  config = configuration.override(common.toy_config("8gaussians"), {"model.width": 8, "batch_size": 8, "num_steps": 2})
  state = jax.device_put(_init_state(config, build_models(config)), train_lib.replicated(train_lib.make_mesh(1)))
  before_dtypes = config.to_dict()
  del before_dtypes["model"]["dtype"], before_dtypes["model"]["param_dtype"]
  with checkpoint.Checkpoints(tmp_path) as checkpoints:
    checkpoints.save(0, state, ml_collections.ConfigDict(before_dtypes))
  assert experiment.load_run(tmp_path).config.model.dtype == "float32"
  with pytest.raises(checkpoint.ConfigMismatchError, match="model.dtype: 'float32' in the checkpoint, 'bfloat16' now"):
    experiment.train_and_evaluate(configuration.override(config, {"model.dtype": "bfloat16"}), tmp_path)
  assert int(experiment.train_and_evaluate(config, tmp_path).state.step) == 2


def test_an_objective_saved_under_its_former_name_loads_and_resumes_under_its_new_name(tmp_path):
  former = configuration.override(common.toy_config("8gaussians"), {
      "model.width": 8, "batch_size": 8, "num_steps": 2, "checkpoint.every": 2, "logging.figure_every": 10**6,
      "critic.linear_decay": False, "generator.linear_decay": False, "objective.name": "wgan_gp_batchnorm"})
  configuration.validate(former)
  assert configuration.training_parts(former).objective.name == "wgan_gp_whole_batch"
  experiment.train_and_evaluate(former, tmp_path / "run")
  assert experiment.load_run(tmp_path / "run").config.objective.name == "wgan_gp_batchnorm"
  renamed = configuration.override(former, {"objective.name": "wgan_gp_whole_batch", "num_steps": 4})
  resumed = experiment.train_and_evaluate(renamed, tmp_path / "run")
  assert int(resumed.state.step) == 4
  # The same run as one trained under the new name from the start.
  np.testing.assert_array_equal(resumed.sample(64, seed=0),
                                experiment.train_and_evaluate(renamed, tmp_path / "new").sample(64, seed=0))
  # Another objective is still another run.
  with pytest.raises(checkpoint.ConfigMismatchError, match="objective.name: 'wgan_gp_whole_batch' in the checkpoint,"
                     " 'wgan_gp' now"):
    experiment.train_and_evaluate(configuration.override(renamed, {"objective.name": "wgan_gp"}), tmp_path / "run")
  assert checkpoint.config_differences({"objective": {"name": "wgan_gp_whole_batch"}},
                                       {"objective": {"name": "wgan_gp_batchnorm"}}) == []


def test_celeba_configs_take_the_recipe_or_the_papers_setting(tmp_path):
  for module in (celeba64, celeba128):
    recipe, paper = module.get_config(), module.get_config("paper")
    assert (recipe.n_critic, recipe.ema.enabled, recipe.model.dtype, recipe.critic.b1, recipe.generator.b1) == (
        2, True, "bfloat16", 0.0, 0.0)
    assert recipe.critic.learning_rate == 2 * recipe.generator.learning_rate
    assert (paper.n_critic, paper.ema.enabled, paper.model.dtype) == (5, False, "float32")
    assert (paper.critic.learning_rate, paper.critic.b1, paper.critic.b2) == (1e-4, 0.0, 0.9) == (
        paper.generator.learning_rate, paper.generator.b1, paper.generator.b2)
    configuration.validate(paper)
  tutorial = celeba32.get_config("tutorial")  # the setting of README's tutorial comparison
  assert (tutorial.n_critic, tutorial.critic.learning_rate, tutorial.generator.learning_rate, tutorial.model.dtype,
          tutorial.ema.enabled, tutorial.num_steps, tutorial.evaluation.every, tutorial.critic.b1, tutorial.generator.b1
          ) == (5, 2e-4, 2e-4, "float32", False, 2000, 0, 0.5, 0.5)
  default = celeba32.get_config()
  assert (default.critic.b1, default.generator.b1) == (0.0, 0.0)
  result = _train("--config=experiments/configs/celeba64.py:papr", f"--workdir={tmp_path / 'run'}")
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      "error: flag --config=experiments/configs/celeba64.py:papr: Error whilst parsing config file: ValueError: unknown"
      " celeba config variant 'papr'; use one of ('', 'paper') (e.g. celeba64.py:paper)")
  assert not (tmp_path / "run").exists()
