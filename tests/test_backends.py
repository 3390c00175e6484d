"""``model.kernels``: the image models as plain flax layers (``xla``) or on the CPU kernels (``cpu``), one set of
parameters for both; ``auto`` resolved by platform."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from checkpoint_testing import image_config
from wgan_gp_jax import configuration
from wgan_gp_jax.models import build_models, resolve_kernels
from wgan_gp_jax.runner import experiment

# (model, resolution, width): small image models of every architecture.
IMAGE_MODELS = [("dcgan", 16, 8), ("resnet", 16, 8)]


def _config(model: str, resolution: int, width: int, kernels_choice: str, **overrides):
  kind = "toy" if model == "toy_mlp" else "image"
  image_keys = {"data.resolution": resolution} if kind == "image" else {}
  return configuration.override(configuration.default_config(kind), {
      "model.name": model, "model.width": width, "model.latent_dim": 16, "model.kernels": kernels_choice,
      **image_keys, **overrides})


def _models(model: str, resolution: int, width: int, kernels_choice: str, **overrides):
  return build_models(_config(model, resolution, width, kernels_choice, **overrides))


def _random(key: int, shape: tuple[int, ...]) -> jax.Array:
  return jax.random.normal(jax.random.key(key), shape, jnp.float32)


def _variables(models, batch: int = 4):
  """Generator variables (params, batch_stats) and critic params, initialised by jitted inits (eager flax inits are
  slow)."""
  z = jnp.zeros((batch, models.latent_dim))
  x = jnp.zeros((batch,) + models.sample_shape)
  generator = jax.jit(lambda key, z: models.generator.init(key, z, train=False))(jax.random.key(0), z)
  critic = jax.jit(models.critic.init)(jax.random.key(1), x)
  return generator, critic


def _random_like(tree, seed: int):
  """Normal noise of each leaf's shape, scaled to the leaf's root mean square (1 for leaves of zeros)."""
  leaves, structure = jax.tree.flatten(tree)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  scales = [float(jnp.sqrt(jnp.mean(jnp.square(leaf)))) or 1.0 for leaf in leaves]
  return jax.tree.unflatten(structure, [scale * jax.random.normal(key, leaf.shape, jnp.float32)
                                        for key, leaf, scale in zip(keys, leaves, scales)])


def _inner(a, b) -> float:
  """The inner product of two pytrees of the same structure, in float64."""
  return sum(float(np.vdot(np.asarray(u, np.float64), np.asarray(v, np.float64)))
             for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _signature(tree) -> dict[str, tuple[tuple[int, ...], str]]:
  return {jax.tree_util.keystr(path): (tuple(leaf.shape), str(leaf.dtype))
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _assert_close(actual, expected, atol=2e-5):
  """Equal to float32 rounding, relative to the largest entry of ``expected`` (arrays or pytrees)."""
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  scale = max(max(float(np.abs(leaf).max()) for leaf in jax.tree.leaves(expected)), 1e-6)
  for actual_leaf, expected_leaf in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    np.testing.assert_allclose(np.asarray(actual_leaf) / scale, np.asarray(expected_leaf) / scale, rtol=0, atol=atol)


# ----------------------------------------------------------------------------------------------------
# Resolving the choice.


def test_auto_is_the_cpu_kernels_on_the_cpu_and_plain_flax_elsewhere():
  for platform, expected in [("cpu", "cpu"), ("gpu", "xla"), ("tpu", "xla"), ("cuda", "xla"), ("rocm", "xla")]:
    assert resolve_kernels("auto", platform) == expected
    models = build_models(_config("dcgan", 16, 8, "auto"), platform=platform)
    assert models.generator.kernels == models.critic.kernels == expected
  assert resolve_kernels("auto") == ("cpu" if jax.default_backend() == "cpu" else "xla")
  for choice in ("xla", "cpu"):  # explicit choices hold on every platform
    for platform in ("cpu", "gpu", "tpu"):
      assert build_models(_config("resnet", 16, 8, choice), platform=platform).critic.kernels == choice


def test_unknown_choices_are_refused_naming_the_setting():
  with pytest.raises(ValueError, match=r"unknown model\.kernels 'cuda'.*valid: auto, xla, cpu"):
    build_models(_config("dcgan", 16, 8, "cuda"))
  with pytest.raises(ValueError, match=r"unknown model\.kernels 'gpu'"):
    build_models(_config("toy_mlp", 0, 8, "gpu"))  # the toy MLPs (plain flax under every choice) check it too
  with pytest.raises(ValueError, match="kernels must be one of"):
    generator = build_models(_config("dcgan", 16, 8, "xla")).generator.clone(kernels="auto")
    generator.init(jax.random.key(0), jnp.zeros((1, 16)), train=False)


# ----------------------------------------------------------------------------------------------------
# One set of variables.


@pytest.mark.parametrize("model, resolution, width", [
    ("dcgan", 32, 8), ("dcgan", 64, 8), ("resnet", 32, 8), ("toy_mlp", 0, 16)])
def test_parameter_trees_are_identical_under_both_choices(model, resolution, width):
  """Same paths, shapes and dtypes of params and batch_stats (generator and critic): a checkpoint of one backend loads
  with the other."""
  trees = {}
  for choice in ("xla", "cpu"):
    models = _models(model, resolution, width, choice)
    z = jax.ShapeDtypeStruct((2, models.latent_dim), jnp.float32)
    x = jax.ShapeDtypeStruct((2,) + models.sample_shape, jnp.float32)
    generator = jax.eval_shape(lambda z: models.generator.init(jax.random.key(0), z, train=False), z)
    critic = jax.eval_shape(lambda x: models.critic.init(jax.random.key(1), x), x)
    trees[choice] = _signature(generator), _signature(critic)
  assert trees["xla"] == trees["cpu"]
  generator, critic = trees["cpu"]
  assert any("params" in path for path in critic)
  if model != "toy_mlp":
    assert any(path.startswith("['batch_stats']") for path in generator)


@pytest.mark.parametrize("model, resolution, width", IMAGE_MODELS)
def test_same_parameters_same_outputs_under_both_choices(model, resolution, width):
  """The generator in training mode (samples and the updated batch statistics) and in evaluation mode, and the
  critic, computed by plain flax layers and by the CPU kernels from the same variables: equal to float32 rounding.
  The initial variables are equal too (same initialisers)."""
  z = _random(2, (8, 16))
  x = jnp.tanh(_random(3, (8, resolution, resolution, 3)))
  results, initial = {}, {}
  for choice in ("cpu", "xla"):
    models = _models(model, resolution, width, choice)
    initial[choice] = _variables(models)
    generator_variables, critic_variables = initial["cpu"]

    def outputs(generator_variables, critic_variables):
      samples, updates = models.generator.apply(generator_variables, z, train=True, mutable=["batch_stats"])
      evaluated = models.generator.apply({**generator_variables, **updates}, z, train=False)
      return samples, updates, evaluated, models.critic.apply(critic_variables, x)

    results[choice] = jax.jit(outputs)(generator_variables, critic_variables)
  for leaf, other in zip(jax.tree.leaves(initial["cpu"]), jax.tree.leaves(initial["xla"])):
    np.testing.assert_array_equal(leaf, other)
  for result, reference in zip(results["cpu"], results["xla"]):
    _assert_close(result, reference)


# ----------------------------------------------------------------------------------------------------
# Forward mode, and what the programs call.


def _generator_and_critic_functions(models, generator_variables, critic_variables):
  """(name, f, primals) for the models as functions of their parameters and inputs."""
  z = _random(4, (4, models.latent_dim))
  x = jnp.tanh(_random(5, (4,) + models.sample_shape))
  batch_stats = generator_variables["batch_stats"]

  def train_mode(params, z):
    samples, updates = models.generator.apply({"params": params, "batch_stats": batch_stats}, z, train=True,
                                              mutable=["batch_stats"])
    return samples, updates["batch_stats"]

  def eval_mode(params, z):
    return models.generator.apply({"params": params, "batch_stats": batch_stats}, z, train=False)

  def critic(params, x):
    return models.critic.apply({"params": params}, x)

  return [("generator, training", train_mode, (generator_variables["params"], z)),
          ("generator, evaluation", eval_mode, (generator_variables["params"], z)),
          ("critic", critic, (critic_variables["params"], x))]


@pytest.mark.parametrize("model, resolution, width", IMAGE_MODELS[1:])  # the ResNet has every layer DCGAN has
def test_forward_mode_through_plain_flax_models_agrees_with_reverse_mode_and_finite_differences(model, resolution,
                                                                                                width):
  """Under ``xla``, ``jax.jvp`` through the generators (both modes) and critics, with respect to parameters and inputs
  at once: ``J t`` equals the transpose of ``jax.vjp``'s ``c -> J^T c`` applied to ``t`` (to float32 rounding, every
  entry), ``<c, J t>`` equals ``<J^T c, t>``, and ``J t`` is a central finite difference (to a few percent of its norm:
  a step of any size moves a few of the ReLUs' inputs across zero). Under ``cpu`` forward mode raises (the kernels'
  custom VJPs)."""
  models = _models(model, resolution, width, "xla")
  variables = _variables(models)
  for name, f, primals in _generator_and_critic_functions(models, *variables):
    tangents = _random_like(primals, 100)
    outputs, forward = jax.jit(lambda p, t: jax.jvp(f, p, t))(primals, tangents)
    _, vjp = jax.vjp(f, *primals)
    by_reverse_mode = jax.jit(jax.linear_transpose(vjp, outputs))(tuple(tangents))[0]
    _assert_close(by_reverse_mode, forward, atol=1e-5)
    cotangents = _random_like(outputs, 200)
    np.testing.assert_allclose(_inner(cotangents, forward), _inner(jax.jit(vjp)(cotangents), tangents), rtol=1e-4,
                               err_msg=name)
    assert abs(_inner(cotangents, forward)) > 1e-3, name  # a real derivative, not zero

    epsilon = 1e-4
    shifted = lambda sign: jax.jit(f)(*jax.tree.map(lambda p, t: p + sign * epsilon * t, primals, tangents))
    difference = jax.tree.map(lambda plus, minus: (plus - minus) / (2 * epsilon), shifted(1.0), shifted(-1.0))
    error = np.sqrt(_inner(*[jax.tree.map(jnp.subtract, difference, forward)] * 2))
    assert error < 5e-2 * np.sqrt(_inner(forward, forward)), name

  models = _models(model, resolution, width, "cpu")
  for name, f, primals in _generator_and_critic_functions(models, *variables):
    with pytest.raises(TypeError, match="custom_vjp"):
      jax.jvp(f, primals, primals)


def _penalty_step(models, generator_variables, critic_variables):
  """A training step's derivatives: the generator loss's gradient and the gradient of a penalty on the critic's input
  gradient (the double backward)."""
  z = _random(6, (4, models.latent_dim))
  x = jnp.tanh(_random(7, (4,) + models.sample_shape))

  def step(generator_variables, critic_params, z, x):
    def generator_loss(params):
      samples, _ = models.generator.apply({**generator_variables, "params": params}, z, train=True,
                                          mutable=["batch_stats"])
      return -jnp.mean(models.critic.apply({"params": critic_params}, samples))

    def penalty(params):
      gradient = jax.grad(lambda x: jnp.sum(models.critic.apply({"params": params}, x)))(x)
      return jnp.mean(jnp.square(jnp.sqrt(jnp.sum(jnp.square(gradient), axis=(1, 2, 3))) - 1.0))

    return jax.grad(generator_loss)(generator_variables["params"]), jax.grad(penalty)(critic_params)

  return step, (generator_variables, critic_variables["params"], z, x)


@pytest.mark.parametrize("model, resolution, width", IMAGE_MODELS)
def test_plain_flax_programs_have_no_custom_calls_or_custom_vjps(model, resolution, width, request):
  """Under ``xla`` a training step's program holds lax's own operations only: no oneDNN custom call, no custom VJP in
  its jaxpr, none of the kernels' optimization barriers. Under ``cpu`` it holds the kernels' custom VJPs and, where
  oneDNN is enabled, calls it."""
  programs = {}
  for choice in ("xla", "cpu"):
    models = _models(model, resolution, width, choice)
    step, arguments = _penalty_step(models, *_variables(models))
    programs[choice] = str(jax.make_jaxpr(step)(*arguments)), jax.jit(step).lower(*arguments).as_text()
  jaxpr, lowered = programs["xla"]
  assert "custom_vjp" not in jaxpr
  assert "custom_call" not in lowered and "wgan_gp_jax_onednn" not in lowered
  assert "optimization_barrier" not in lowered
  assert re.search(r"stablehlo\.convolution", lowered)

  jaxpr, lowered = programs["cpu"]
  assert "custom_vjp" in jaxpr
  request.getfixturevalue("onednn_convolutions")  # where they are off, the cpu half checks the custom VJPs only
  assert re.search(r"custom_call @wgan_gp_jax_onednn_\w+", lowered)


# ----------------------------------------------------------------------------------------------------
# A run trained on one backend, sampled on the other.


def test_a_run_trained_on_the_cpu_kernels_samples_the_same_images_with_plain_flax(face_folder, tmp_path):
  config = image_config(face_folder, tmp_path / "tfds", **{
      "model.kernels": "cpu", "model.dtype": "float32", "num_steps": 4, "checkpoint.every": 2,
      "evaluation.every": 0})
  experiment.train_and_evaluate(config, tmp_path / "run")
  trained = experiment.load_run(tmp_path / "run")
  plain = experiment.load_run(tmp_path / "run", kernels="xla")
  assert trained.models.generator.kernels == "cpu" and trained.config.model.kernels == "cpu"
  assert plain.models.generator.kernels == "xla" and plain.config.model.kernels == "xla"
  latents = trained.latents(32, seed=1)
  images, plain_images = trained.generate(latents), plain.generate(latents)
  assert float(np.std(images)) > 1e-3  # trained a little, not constant
  np.testing.assert_allclose(plain_images, images, rtol=0, atol=1e-5)
  np.testing.assert_allclose(plain.critic(images), trained.critic(images), rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="model.kernels"):
    experiment.load_run(tmp_path / "run", kernels="fast")


def _celeba64_program(variant: str, platform: str, models_platform: str) -> str:
  """The StableHLO of celeba64's compiled training iteration (state replicated and donated, batch sharded), lowered
  for ``platform`` with the models built for ``models_platform``, from abstract values: nothing is computed."""
  from experiments.configs import celeba64
  from wgan_gp_jax import train

  config = celeba64.get_config(variant)
  models = build_models(config, platform=models_platform)
  parts = configuration.training_parts(config)
  mesh = train.make_mesh(1)
  state = jax.eval_shape(lambda: train.init_state(models, parts.optimizers, seed=config.seed,
                                                  ema=parts.ema is not None))
  real = jax.ShapeDtypeStruct((config.n_critic, config.batch_size, *models.sample_shape), jnp.float32)
  iteration = train.compile_train_iteration(models, parts.objective, parts.optimizers, mesh, n_critic=config.n_critic,
                                            augmentation=parts.augmentation, ema=parts.ema)
  return iteration.trace(state, real).lower(lowering_platforms=(platform,)).as_text()


def _custom_call_targets(program: str) -> set[str]:
  return set(re.findall(r"custom_call @([\w.]+)", program)) | set(re.findall(r'call_target_name = "([\w.]+)"', program))


@pytest.mark.parametrize("variant", ["", "paper"], ids=["bfloat16", "float32"])
@pytest.mark.parametrize("platform,models_platform", [("tpu", "tpu"), ("cuda", "gpu")])
def test_celeba64_iteration_lowers_for_accelerators_without_cpu_custom_calls(variant, platform, models_platform):
  program = _celeba64_program(variant, platform, models_platform)
  assert ("bf16>" in program) == (variant == "")  # the recipe computes in bfloat16, the paper's setting in float32
  assert "stablehlo.convolution" in program  # lax's convolutions, not products or custom calls
  # Sharding annotations are the only custom calls XLA's SPMD partitioner itself puts there.
  assert _custom_call_targets(program) <= {"Sharding", "SPMDFullToShardShape", "SPMDShardToFullShape"}, (
      _custom_call_targets(program))


def test_the_cpu_kernels_program_calls_onednn_where_the_accelerator_program_does_not(onednn_convolutions):
  """The check above can fail: the same iteration with the CPU kernels, lowered for the CPU, calls oneDNN."""
  targets = _custom_call_targets(_celeba64_program("paper", "cpu", "cpu"))
  assert any(target.startswith("wgan_gp_jax_onednn") for target in targets), targets
