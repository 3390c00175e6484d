import flax
import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from wgan_gp_jax import configuration, losses
from wgan_gp_jax import train as train_lib
from wgan_gp_jax.models import build_models
from wgan_gp_jax.models.dcgan import DCGANCritic, DCGANGenerator
from wgan_gp_jax.models.resnet import ResNetCritic, ResNetGenerator
from wgan_gp_jax.models.toy import ToyCritic, ToyGenerator


def _shapes(module, *args, **kwargs):
  variables = jax.eval_shape(lambda: module.init(jax.random.key(0), *args, **kwargs))
  output = jax.eval_shape(lambda v: module.apply(v, *args, **kwargs), variables)
  return variables, output


@pytest.mark.parametrize("resolution", [32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes_at_every_resolution_and_channel_count(resolution, channels):
  z = jnp.zeros((2, 128))
  generator_vars, images = _shapes(DCGANGenerator(resolution=resolution, channels=channels, width=8), z, train=False)
  assert images.shape == (2, resolution, resolution, channels)
  assert "batch_stats" in generator_vars
  critic_vars, scores = _shapes(DCGANCritic(width=8), jnp.zeros((2, resolution, resolution, channels)))
  assert scores.shape == (2,)
  assert set(critic_vars) == {"params"}  # no batch norm in the critic
  convs = sorted(k for k in critic_vars["params"] if k.startswith("Conv"))
  # Stride-2 5x5 convolutions from the resolution down to 4x4, widths doubling.
  assert len(convs) == int(np.log2(resolution // 4))
  assert [critic_vars["params"][k]["kernel"].shape for k in convs][-1] == (5, 5, 8 * 2 ** (len(convs) - 2),
                                                                          8 * 2 ** (len(convs) - 1))


def test_dcgan_generator_output_is_in_tanh_range_and_critic_layer_norm_is_optional():
  generator = DCGANGenerator(resolution=16, channels=3, width=8)
  variables = jax.jit(lambda z: generator.init(jax.random.key(0), z, train=False))(jnp.zeros((1, 128)))
  images, _ = jax.jit(lambda v, z: generator.apply(v, z, train=True, mutable=["batch_stats"]))(
      variables, 10 * jax.random.normal(jax.random.key(1), (4, 128)))
  assert float(jnp.max(jnp.abs(images))) <= 1.0
  with_norm = jax.eval_shape(DCGANCritic(width=8, layer_norm=True).init, jax.random.key(0), images)["params"]
  assert sum(k.startswith("LayerNorm") for k in with_norm) == 1  # after every convolution but the first (of 2)


def test_resnet_matches_the_papers_cifar_layout():
  generator_vars, images = _shapes(ResNetGenerator(width=16), jnp.zeros((2, 128)), train=False)
  assert images.shape == (2, 32, 32, 3)
  assert sum(k.startswith("GeneratorBlock") for k in generator_vars["params"]) == 3
  critic_vars, scores = _shapes(ResNetCritic(width=16), jnp.zeros((2, 32, 32, 3)))
  assert scores.shape == (2,) and set(critic_vars) == {"params"}
  assert sum(k.startswith("CriticBlock") for k in critic_vars["params"]) == 3  # after the optimised first block


def test_toy_mlps_have_three_hidden_layers_of_512():
  generator_vars, points = _shapes(ToyGenerator(), jnp.zeros((5, 2)))
  assert points.shape == (5, 2)
  kernels = [v["kernel"].shape for v in generator_vars["params"].values()]
  assert kernels == [(2, 512), (512, 512), (512, 512), (512, 2)]
  critic_vars, scores = _shapes(ToyCritic(), jnp.zeros((5, 2)))
  assert scores.shape == (5,) and len(critic_vars["params"]) == 4


def test_build_models_rejects_unknown_models_and_resolutions():
  config = configuration.default_config("image")
  config.model.name = "stylegan"
  with pytest.raises(ValueError, match="unknown model.name 'stylegan'"):
    build_models(config)
  with pytest.raises(ValueError, match="resolution"):
    _shapes(DCGANGenerator(resolution=48), jnp.zeros((1, 128)))


def test_critics_score_each_example_on_its_own():
  # The gradient penalty relies on it: a critic's score for x_i must not depend on x_j.
  x = jax.random.normal(jax.random.key(0), (4, 16, 16, 3))
  for critic in (DCGANCritic(width=8, layer_norm=True), ResNetCritic(width=8)):
    variables = jax.jit(critic.init)(jax.random.key(1), x)
    jacobian = jax.jit(jax.jacobian(lambda x: critic.apply(variables, x)))(x)  # (4, 4, 16, 16, 3)
    cross = jnp.abs(jacobian.sum(axis=(2, 3, 4)) * (1 - jnp.eye(4)))
    assert float(cross.max()) == 0.0


def _products_and_outputs(fn, *args) -> tuple[set[tuple[str, ...]], set[str]]:
  """The operand dtypes of every matrix product and convolution ``fn`` traces to (nested jaxprs included), and the
  dtypes of its outputs."""
  products = set()

  def visit(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
        products.add(tuple(var.aval.dtype.name for var in eqn.invars))
      for value in eqn.params.values():
        for sub in value if isinstance(value, (tuple, list)) else (value,):
          if isinstance(sub, jax.extend.core.ClosedJaxpr):
            visit(sub.jaxpr)
          elif isinstance(sub, jax.extend.core.Jaxpr):
            visit(sub)

  closed = jax.make_jaxpr(fn)(*args)
  visit(closed.jaxpr)
  return products, {aval.dtype.name for aval in closed.out_avals}


@pytest.mark.parametrize("name", ["toy_mlp", "dcgan", "resnet"])
def test_bfloat16_models_compute_in_bfloat16_with_float32_parameters_state_and_outputs(name):
  kind = "toy" if name == "toy_mlp" else "image"
  image_keys = {"data.resolution": 16, "model.layer_norm": True} if kind == "image" else {}
  config = configuration.override(configuration.default_config(kind), {
      "model.name": name, "model.width": 8, "model.latent_dim": 16, "model.dtype": "bfloat16", **image_keys})
  configuration.validate(config)
  models = build_models(config)
  optimizers = configuration.training_parts(config).optimizers
  state = jax.eval_shape(lambda: train_lib.init_state(models, optimizers, seed=config.seed, ema=False))
  # Parameters, batch-norm statistics and both optimizer states.
  assert {leaf.dtype.name for leaf in jax.tree.leaves(state) if jnp.issubdtype(leaf.dtype, jnp.floating)} == {"float32"}
  z = jnp.ones((4, models.latent_dim))
  real = jnp.full((4,) + models.sample_shape, 0.5)
  fake = jnp.full((4,) + models.sample_shape, -0.5)

  def critic_loss(params):
    return losses.wgan_gp_critic_loss(train_lib.critic_fn(models, params), real, fake, jax.random.key(0))[0]

  def generator_loss(params, batch_stats, critic_params):
    samples, _ = train_lib.generate(models, params, batch_stats, z, train=True)
    return -jnp.mean(train_lib.critic_fn(models, critic_params)(samples))

  # Every product of both losses' gradients (the penalty's double backward included) takes bfloat16 operands, and
  # the gradients are float32.
  bfloat16_products = {("bfloat16", "bfloat16")}
  assert _products_and_outputs(jax.grad(critic_loss), state.critic_params) == (bfloat16_products, {"float32"})
  assert _products_and_outputs(jax.grad(generator_loss), state.generator_params, state.generator_batch_stats,
                               state.critic_params) == (bfloat16_products, {"float32"})
  # Samples, batch-norm statistics and scores are float32; the default config computes in float32.
  assert _products_and_outputs(lambda p, b: train_lib.generate(models, p, b, z, train=True), state.generator_params,
                               state.generator_batch_stats)[1] == {"float32"}
  assert _products_and_outputs(lambda p: train_lib.critic_fn(models, p)(real), state.critic_params)[1] == {"float32"}
  float32_models = build_models(configuration.override(config, {"model.dtype": "float32"}))
  assert _products_and_outputs(lambda p: train_lib.critic_fn(float32_models, p)(real), state.critic_params) == (
      {("float32", "float32")}, {"float32"})
