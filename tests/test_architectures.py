"""The architectures of the paper's robustness experiment (``models.paper_architectures``), the critic normalisation
each objective allows, and ``experiments.architecture_grid`` end to end on a tiny grid."""

import dataclasses
import json
import pathlib
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import robustness_cell
from wgan_gp_jax import configuration, objectives
from wgan_gp_jax import train as train_lib
from wgan_gp_jax.models import Models, build_models, critic_normalization, paper_architectures
from wgan_gp_jax.models.dcgan import DCGANCritic, DCGANGenerator
from wgan_gp_jax.runner import host
from wgan_gp_jax.models.layers import layer_set

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NEW_ARCHITECTURES = paper_architectures.ARCHITECTURES[1:]  # dcgan is models.dcgan's
GRID_OBJECTIVES = ("ns", "lsgan", "wgan_clip", "wgan_gp")


def _config(architecture: str, objective: str = "wgan_gp", *, resolution: int = 16, width: int = 8, **overrides):
  settings = {"model.name": architecture, "model.width": width, "model.latent_dim": 16, "data.resolution": resolution,
              "batch_size": 8, "objective.name": objective, **objectives.ROBUSTNESS_SETTINGS.get(objective, {}),
              **overrides}
  return configuration.override(configuration.default_config("image"), settings)


def _variables_and_outputs(models, batch: int = 2):
  z = jnp.zeros((batch, models.latent_dim))
  x = jnp.zeros((batch,) + models.sample_shape)
  generator_variables = jax.eval_shape(lambda: models.generator.init(jax.random.key(0), z, train=False))
  critic_variables = jax.eval_shape(lambda: models.critic.init(jax.random.key(1), x))
  images = jax.eval_shape(lambda v: models.generator.apply(v, z, train=False), generator_variables)
  scores = jax.eval_shape(lambda v: models.critic.apply(v, x), critic_variables)
  return generator_variables, critic_variables, images, scores


def _layer_names(variables) -> set[str]:
  return {name for path in flax.traverse_util.flatten_dict(flax.core.unfreeze(variables["params"])) for name in path}


@pytest.mark.parametrize("resolution", [32, 64])
@pytest.mark.parametrize("architecture", NEW_ARCHITECTURES)
def test_each_architecture_builds_with_the_same_variables_under_both_kernel_sets(architecture, resolution):
  for objective in ("wgan_gp", "ns"):
    trees = {}
    for kernels in ("xla", "cpu"):
      models = build_models(_config(architecture, objective, resolution=resolution,
                                    **{"model.kernels": kernels}))
      generator_variables, critic_variables, images, scores = _variables_and_outputs(models)
      assert images.shape == (2, resolution, resolution, 3) and images.dtype == jnp.float32
      assert scores.shape == (2,) and scores.dtype == jnp.float32
      assert set(critic_variables) == {"params"}  # no batch_stats in any critic
      trees[kernels] = jax.tree.map(lambda leaf: (leaf.shape, leaf.dtype), (generator_variables, critic_variables))
    assert trees["xla"] == trees["cpu"]
    critic_layers = _layer_names(critic_variables)
    if objective == "wgan_gp" or architecture == "no_norm":
      assert not any(name.startswith(("BatchNorm", "BatchStatisticsNorm")) for name in critic_layers), critic_layers
    else:
      assert any(name.startswith("BatchStatisticsNorm") for name in critic_layers), critic_layers
    has_generator_batch_norm = "batch_stats" in generator_variables
    assert has_generator_batch_norm == (architecture not in ("g_no_bn", "g_mlp", "no_norm"))


def _weight_layers(variables) -> int:
  """Convolutions, transposed convolutions and dense layers: the kernels of the parameter tree."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables["params"]))
  return sum(path[-1] == "kernel" for path in flat)


@pytest.mark.parametrize("resolution, plain_blocks", [(32, [8, 8, 7, 7]), (64, [6, 6, 6, 6, 5])])
def test_resnet101_has_101_layers_and_the_authors_blocks_per_level(resolution, plain_blocks):
  assert paper_architectures.resnet101_plain_blocks(int(np.log2(resolution // 4))) == plain_blocks
  models = build_models(_config("resnet101", resolution=resolution))
  generator_variables, critic_variables, _, _ = _variables_and_outputs(models)
  assert _weight_layers(generator_variables) - _shortcuts(generator_variables) == 101
  assert _weight_layers(critic_variables) - _shortcuts(critic_variables) == 101
  # Width 8: 4 filters at the image's resolution, doubling at each halving.
  assert critic_variables["params"]["Dense_0"]["kernel"].shape == (4 * 4 * resolution, 1)


def _shortcuts(variables) -> int:
  """The 1x1 convolutions of the blocks' shortcuts (not counted among the 101 layers, as in the paper's code)."""
  count = 0
  for name, block in variables["params"].items():
    if name.startswith("BottleneckBlock"):
      count += sum(1 for layer in block if layer.startswith("Conv")) - 3
  return count


def test_the_simpler_architectures_follow_the_authors_functions():
  # g_mlp: FCGenerator's four ReLU layers of 512, then every pixel.
  generator_variables, _, _, _ = _variables_and_outputs(build_models(_config("g_mlp", resolution=32)))
  kernels = [layer["kernel"].shape for layer in generator_variables["params"].values()]
  assert kernels == [(16, 512), (512, 512), (512, 512), (512, 512), (512, 32 * 32 * 3)]
  # g_no_bn: no normalisation, width filters in every layer (WGANPaper_CrippledDCGANGenerator).
  generator_variables, _, _, _ = _variables_and_outputs(build_models(_config("g_no_bn", resolution=32)))
  assert set(generator_variables) == {"params"}
  convolutions = [v["kernel"].shape for k, v in generator_variables["params"].items() if k.startswith("Conv")]
  assert convolutions == [(5, 5, 8, 8), (5, 5, 8, 8), (5, 5, 8, 3)]
  # gated: twice the filters before each gate.
  generator_variables, critic_variables, _, _ = _variables_and_outputs(build_models(_config("gated", resolution=32)))
  assert generator_variables["params"]["Dense_0"]["kernel"].shape == (16, 4 * 4 * 32 * 2)
  assert critic_variables["params"]["Conv_0"]["kernel"].shape == (5, 5, 3, 16)
  x = jnp.arange(8.0).reshape(1, 1, 1, 8) / 8
  np.testing.assert_allclose(paper_architectures.gated_activation(x)[0, 0, 0],
                             jax.nn.sigmoid(x[0, 0, 0, 0::2]) * jnp.tanh(x[0, 0, 0, 1::2]), rtol=1e-6)


@pytest.mark.parametrize("layer_norm", [False, True])
def test_the_conv_families_are_models_dcgan_with_its_options(layer_norm):
  z = jax.random.normal(jax.random.key(0), (4, 16))
  x = jax.random.uniform(jax.random.key(1), (4, 32, 32, 3), minval=-1, maxval=1)
  ours = paper_architectures.ConvCritic(width=8, norm="layer" if layer_norm else "none")
  theirs = DCGANCritic(width=8, layer_norm=layer_norm)
  variables = theirs.init(jax.random.key(2), x)
  assert jax.tree.structure(ours.init(jax.random.key(2), x)) == jax.tree.structure(variables)
  np.testing.assert_array_equal(ours.apply(variables, x), theirs.apply(variables, x))
  generator = DCGANGenerator(resolution=32, width=8)
  variables = generator.init(jax.random.key(3), z, train=False)
  ours = paper_architectures.ConvGenerator(resolution=32, width=8)
  assert jax.tree.structure(ours.init(jax.random.key(3), z, train=False)) == jax.tree.structure(variables)
  np.testing.assert_array_equal(ours.apply(variables, z, train=False), generator.apply(variables, z, train=False))


def test_batch_statistics_norm_is_the_same_under_both_kernel_sets_and_keeps_no_statistics():
  x = jax.random.normal(jax.random.key(0), (8, 4, 4, 6)) * 3 + 1
  xla_layer = layer_set("xla").BatchStatisticsNorm()
  cpu_layer = layer_set("cpu").BatchStatisticsNorm()
  variables = xla_layer.init(jax.random.key(0), x)
  assert set(variables) == {"params"} and set(variables["params"]) == {"scale", "bias"}
  variables = {"params": {"scale": jnp.linspace(0.5, 2.0, 6), "bias": jnp.linspace(-1.0, 1.0, 6)}}
  y = xla_layer.apply(variables, x)
  np.testing.assert_allclose(y, cpu_layer.apply(variables, x), rtol=1e-4, atol=1e-5)
  mean, std = np.mean(np.asarray(x), (0, 1, 2)), np.std(np.asarray(x), (0, 1, 2))
  expected = (np.asarray(x) - mean) / np.sqrt(std**2 + 1e-5) * np.linspace(0.5, 2.0, 6) + np.linspace(-1.0, 1.0, 6)
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
  loss = lambda layer: lambda v: jnp.sum(jnp.sin(layer.apply(v, x)))
  for a, b in zip(jax.tree.leaves(jax.grad(loss(xla_layer))(variables)),
                  jax.tree.leaves(jax.grad(loss(cpu_layer))(variables))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_critic_normalisation_is_a_function_of_the_objective():
  norm = lambda architecture, objective, **overrides: critic_normalization(
      _config(architecture, objective, **overrides))
  for architecture in ("g_no_bn", "g_mlp", "gated", "tanh", "resnet101"):
    assert norm(architecture, "wgan_gp") == "layer"
    assert {norm(architecture, name) for name in ("ns", "lsgan", "wgan_clip")} == {"batch"}
    assert norm(architecture, "ns_r1") == "layer" and norm(architecture, "dragan") == "layer"
  assert norm("no_norm", "ns") == "none" and norm("no_norm", "wgan_gp") == "none"
  # dcgan keeps the critic it had before model.critic_norm under "auto"; the grid names the paper's.
  assert norm("dcgan", "ns") == "none" and norm("dcgan", "wgan_gp", **{"model.layer_norm": True}) == "layer"
  assert norm("dcgan", "ns", **{"model.critic_norm": "batch"}) == "batch"
  assert critic_normalization(configuration.default_config("toy")) == "none"


@pytest.mark.parametrize("architecture", ["dcgan", "gated", "resnet101"])
def test_validate_refuses_a_batch_norm_critic_with_a_gradient_penalty(architecture):
  for objective in ("wgan_gp", "wgan_lp", "ns_r1", "dragan", "wgan_gp_whole_batch"):
    config = _config(architecture, objective, **{"model.critic_norm": "batch"})
    with pytest.raises(configuration.ConfigError, match="input-gradient penalty needs each example's score"):
      configuration.validate(config)
    with pytest.raises(ValueError, match="batch norm makes it depend on the whole batch"):
      build_models(config)
  configuration.validate(_config(architecture, "ns", **{"model.critic_norm": "batch"}))


def test_validate_refuses_normalisations_an_architecture_does_not_have():
  cases = [("no_norm", "ns", {"model.critic_norm": "batch"}, "the no_norm critic takes only none"),
           ("resnet", "ns", {"model.critic_norm": "layer"}, "the resnet critic takes only none"),
           ("gated", "ns", {"model.critic_norm": "batch", "model.layer_norm": True}, "set only one of them"),
           ("gated", "ns", {"model.critic_norm": "group"}, "unknown model.critic_norm 'group'")]
  for architecture, objective, overrides, message in cases:
    with pytest.raises(configuration.ConfigError, match=message):
      configuration.validate(_config(architecture, objective, **overrides))


@pytest.mark.parametrize("architecture", ["g_no_bn", "tanh", "gated", "resnet101"])
def test_layer_norm_critics_score_each_example_on_its_own(architecture):
  models = _shallow(build_models(_config(architecture, "wgan_gp", **{"model.kernels": "xla"})), blocks=2)
  x = jax.random.uniform(jax.random.key(0), (4,) + models.sample_shape, minval=-1, maxval=1)
  variables = jax.jit(models.critic.init)(jax.random.key(1), x)
  scores = jax.jit(models.critic.apply)(variables, x)
  np.testing.assert_allclose(jax.jit(models.critic.apply)(variables, x[:1]), scores[:1], rtol=1e-5, atol=1e-6)


def _shallow(models: Models, blocks: int) -> Models:
  """``models`` with ``blocks`` bottleneck blocks instead of 33 where they are the 101-layer ResNet's."""
  if not isinstance(models.generator, paper_architectures.ResNet101Generator):
    return models
  return dataclasses.replace(models, generator=models.generator.clone(blocks=blocks),
                             critic=models.critic.clone(blocks=blocks))


@pytest.mark.parametrize("architecture", NEW_ARCHITECTURES)
def test_each_architecture_trains_with_each_objective_without_nan(architecture):
  for objective in GRID_OBJECTIVES:
    config = _config(architecture, objective, **{"model.kernels": "xla"})
    configuration.validate(config)
    # The 101-layer ResNet compiles for minutes per objective: its blocks train here in a network of 2 (the full depth
    # builds in the tests above, and trains in experiments.architecture_grid).
    models = _shallow(build_models(config), blocks=2)
    parts = configuration.training_parts(config)
    state = train_lib.init_state(models, parts.optimizers, seed=0, ema=False)
    iteration = jax.jit(train_lib.make_train_iteration(models, parts.objective, parts.optimizers,
                                                       n_critic=config.n_critic))
    rng = np.random.default_rng(0)
    for _ in range(2):
      real = rng.uniform(-1, 1, (config.n_critic, config.batch_size) + models.sample_shape).astype(np.float32)
      state, metrics = iteration(state, jnp.asarray(real))
    assert int(state.step) == 2
    for name, value in metrics.items():
      assert np.isfinite(float(value)), (architecture, objective, name, value)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(state))


def test_every_cell_of_the_grid_makes_a_valid_config():
  for architecture in paper_architectures.ARCHITECTURES:
    for objective in robustness_cell.OBJECTIVES:
      config = robustness_cell.cell_config(architecture, objective, resolution=32, steps=100,
                                           width=robustness_cell.cell_width(architecture, 32),
                                           batch_size=64, image_folder="/faces")
      expected = "none" if architecture == "no_norm" else ("layer" if objective == "wgan_gp" else "batch")
      assert config.model.critic_norm == expected == critic_normalization(config)
      assert config.n_critic == (5 if objective.startswith("wgan") else 1)
      assert config.model.width == (16 if architecture == "resnet101" else 32)
      assert (config.data.resolution, config.batch_size, config.ema.enabled) == (32, 64, False)


def test_the_grid_trains_and_writes_its_table_and_figure_and_resumes_cell_by_cell(face_folder, command_env, tmp_path):
  # FID per cell is experiments.subruns' evaluation, which tests/test_compare.py runs with the Inception network: here
  # the grid trains, records and draws (an Inception evaluation per cell would triple this test's time).
  fid_args = ["--no_fid"]
  workdir = tmp_path / "grid"
  args = [sys.executable, "-m", "experiments.architecture_grid", f"--workdir={workdir}", "--resolution=16",
          "--width=8", "--batch_size=8", "--steps=2", "--architectures=gated", "--objectives=wgan_gp,ns",
          "--grid_samples=4", f"--image_folder={face_folder}", f"--data_dir={tmp_path / 'tfds'}", *fid_args]
  result = subprocess.run(args, cwd=REPO_ROOT, env=command_env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-4000:]
  summary = json.loads((workdir / "architecture_robustness.json").read_text())
  cells = summary["cells"]
  assert [(c["architecture"], c["objective"]) for c in cells] == [("gated", "wgan_gp"), ("gated", "ns")]
  for cell in cells:
    assert set(architecture_grid_record_keys()) <= set(cell)
    assert cell["generator_steps"] == 2 and cell["train_seconds"] > 0 and not cell["diverged"]
    assert cell["critic_norm"] == ("layer" if cell["objective"] == "wgan_gp" else "batch")
    config = json.loads((workdir / f"{cell['architecture']}__{cell['objective']}" / "config.json").read_text())
    assert config["model"]["name"] == cell["architecture"] and config["n_critic"] == cell["n_critic"]
    assert cell["fid"] is None and cell["kid"] is None
    assert 0 < cell["sample_spread"] < 5 and cell["spread_samples"] == 500
    assert cell["cpu"] == host.cpu_description()  # the machine that trained the cell, recorded when it trained
  table = (workdir / "architecture_robustness.md").read_text()
  assert "| architecture | WGAN-GP | DCGAN (ns) |" in table and "| `gated` |" in table
  assert (workdir / "architecture_robustness.png").read_bytes()[:4] == b"\x89PNG"
  # Run again: every cell is done, nothing is trained or evaluated anew.
  again = subprocess.run(args, cwd=REPO_ROOT, env=command_env, capture_output=True, text=True, timeout=900)
  assert again.returncode == 0, again.stderr[-4000:]
  assert json.loads((workdir / "architecture_robustness.json").read_text())["cells"] == cells


def architecture_grid_record_keys() -> tuple[str, ...]:
  """The keys every record has (``experiments.architecture_grid.RECORD_KEYS``, read without importing its flags)."""
  return ("architecture", "objective", "generator_steps", "train_seconds", "fid", "fid_samples", "kid", "cpu",
          "commit")
