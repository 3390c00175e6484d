"""The matrix-product convolutions are lax's convolutions: values, gradients and the penalty's double backward."""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax
from jax.test_util import check_grads

from wgan_gp_jax import configuration, losses
from wgan_gp_jax.kernels import conv, layers, onednn
from wgan_gp_jax.models import build_models

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")

# (input height, input width, kernel, stride, padding): the models' 5x5 stride 2, 3x3 and 1x1
# stride 1, at even and odd sizes, plus a few shapes the models do not use.
CONV_CASES = [
    (8, 7, 5, 2, "SAME"),
    (9, 6, 3, 1, "SAME"),
    (5, 4, 1, 1, "SAME"),
    (10, 7, 4, 2, "SAME"),
    (10, 11, 3, 3, "VALID"),  # the last row and last two columns are read by no window
    (6, 6, 3, 1, ((2, 0), (1, 3))),
]
TRANSPOSE_CASES = [case for case in CONV_CASES if case[4] in ("SAME", "VALID")]


def _compile(fn, *args):
  """jit and compile; LLVM's -O0 keeps the tests' compile times low (values are what they check)."""
  return jax.jit(fn).lower(*args).compile(compiler_options={"xla_backend_optimization_level": 0})


def _random(key: int, shape: tuple[int, ...]) -> jax.Array:
  return jax.random.normal(jax.random.key(key), shape, jnp.float32)


def _assert_close(actual, expected, rtol=2e-5):
  """Equal to float32 rounding, relative to the largest entry of ``expected`` (arrays or pytrees).

  One scale for a whole pytree: a gradient that is zero in exact arithmetic (a bias
  before batch norm) is float32 noise and is compared at the scale of the others.
  """
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  scale = max(max(float(np.abs(leaf).max()) for leaf in jax.tree.leaves(expected)), 1e-6)
  for actual_leaf, expected_leaf in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    assert np.shape(actual_leaf) == np.shape(expected_leaf)
    np.testing.assert_allclose(np.asarray(actual_leaf) / scale, np.asarray(expected_leaf) / scale, rtol=0, atol=rtol)


def _lax_conv(x, w, strides, padding):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=DIMENSION_NUMBERS)


def _penalty(conv_fn, w, x):
  """A WGAN-GP-like penalty: gradient norms of a nonlinear score of conv_fn's output."""
  gradients = jax.grad(lambda inputs: jnp.sum(jnp.tanh(conv_fn(inputs, w)) ** 2))(x)
  return jnp.mean((jnp.sqrt(jnp.sum(gradients**2, axis=(1, 2, 3))) - 1.0) ** 2)


def _value_gradients_and_penalty_gradients(conv_fn, x, w, cotangent):
  """conv_fn's output, its vjp at ``cotangent``, and the penalty's gradient (a double backward), in one jit."""
  def compute(x, w, cotangent):
    y, vjp = jax.vjp(conv_fn, x, w)
    return y, vjp(cotangent), jax.grad(_penalty, argnums=(1, 2))(conv_fn, w, x)
  return _compile(compute, x, w, cotangent)(x, w, cotangent)


def _check_against(mine, reference, x, w):
  cotangent = _random(3, jax.eval_shape(reference, x, w).shape)
  (y, first, second) = _value_gradients_and_penalty_gradients(mine, x, w, cotangent)
  (reference_y, reference_first, reference_second) = _value_gradients_and_penalty_gradients(reference, x, w, cotangent)
  _assert_close(y, reference_y)
  for mine_grad, reference_grad in zip(first, reference_first):
    _assert_close(mine_grad, reference_grad)
  for mine_grad, reference_grad in zip(second, reference_second):
    _assert_close(mine_grad, reference_grad, rtol=1e-4)


@pytest.mark.parametrize("height, width, kernel, stride, padding", CONV_CASES)
def test_conv2d_matches_lax_with_first_and_second_derivatives(cpu_path, height, width, kernel, stride, padding):
  x, w = _random(0, (2, height, width, 3)), _random(1, (kernel, kernel, 3, 4))
  _check_against(lambda x, w: conv.conv2d(x, w, (stride, stride), padding),
                 lambda x, w: _lax_conv(x, w, (stride, stride), padding), x, w)


@pytest.mark.parametrize("height, width, kernel, stride, padding", TRANSPOSE_CASES)
def test_conv2d_transpose_matches_lax_with_first_and_second_derivatives(cpu_path, height, width, kernel, stride,
                                                                        padding):
  # 8 output channels: oneDNN's input gradient (conv._ONEDNN_MIN_SCATTER_CHANNELS); conv2d's above, into 3, is the
  # sub-pixel form's (conv._scatter_subpixel) on oneDNN's path, col2im's on the products'.
  x, w = _random(0, (2, height, width, 4)), _random(1, (kernel, kernel, 4, 8))
  _check_against(lambda x, w: conv.conv2d_transpose(x, w, (stride, stride), padding),
                 lambda x, w: lax.conv_transpose(x, w, (stride, stride), padding, dimension_numbers=DIMENSION_NUMBERS),
                 x, w)


@pytest.mark.parametrize("height, width, kernel, stride, padding", TRANSPOSE_CASES)
def test_conv2d_transpose_with_bias_is_conv2d_transpose_plus_bias_to_second_order(cpu_path, height, width, kernel,
                                                                                  stride, padding):
  """conv2d_transpose(bias=b) (oneDNN's deconvolution adds it on its path) against lax.conv_transpose + b: values,
  gradients of x, kernel and bias, and the gradients of a penalty on x's gradient."""
  x, w, b = _random(0, (2, height, width, 4)), _random(1, (kernel, kernel, 4, 8)), _random(2, (8,))
  mine = lambda x, w, b: conv.conv2d_transpose(x, w, (stride, stride), padding, bias=b)
  reference = lambda x, w, b: lax.conv_transpose(x, w, (stride, stride), padding,
                                                 dimension_numbers=DIMENSION_NUMBERS) + b
  cotangent = _random(3, jax.eval_shape(reference, x, w, b).shape)

  def derivatives(fn):
    def compute(x, w, b):
      y, vjp = jax.vjp(fn, x, w, b)
      penalty = lambda w, b: jnp.sum(jax.grad(lambda x: jnp.sum(jnp.tanh(fn(x, w, b)) ** 2))(x) ** 2)
      return y, vjp(cotangent), jax.grad(penalty, argnums=(0, 1))(w, b)
    return compute

  if cpu_path == "onednn":
    assert _onednn_faces(mine, x, w, b)[0] == "scatter_bias"
  results = _compile(derivatives(mine), x, w, b)(x, w, b)
  reference_results = _compile(derivatives(reference), x, w, b)(x, w, b)
  for result, reference_result, rtol in zip(results, reference_results, (2e-5, 2e-5, 1e-4)):
    _assert_close(result, reference_result, rtol=rtol)


# Shapes XLA:CPU computes by Winograd F(4, 3) on the space-to-depth grid (conv._winograd_pays: float32, 64 channels
# on the high-resolution side, 32 for the input gradient, outputs of 8x8 or more): the DCGAN's 5x5 stride 2 and the
# ResNet's 3x3 stride 1.
WINOGRAD_CASES = [(16, 15, 5, 2), (8, 9, 3, 1)]


def _uses_winograd(fn, *args) -> bool:
  """Whether the CPU program of ``fn`` has batched products (only the Winograd faces make them)."""
  return "batching_dims" in jax.jit(fn).lower(*args).as_text()


def _onednn_faces(fn, *args) -> list[str]:
  """The oneDNN faces the CPU program of ``fn`` calls, in order."""
  text = jax.jit(fn).lower(*args).as_text()
  return re.findall(r"custom_call @wgan_gp_jax_onednn_(\w+)", text)


@pytest.mark.parametrize("height, width, kernel, stride", WINOGRAD_CASES)
def test_winograd_conv2d_matches_lax_with_first_and_second_derivatives(height, width, kernel, stride):
  x, w = _random(0, (2, height, width, 64)), _random(1, (kernel, kernel, 64, 4)) / 8
  mine = lambda x, w: conv.conv2d(x, w, (stride, stride))
  assert _uses_winograd(mine, x, w) and not _uses_winograd(mine, x[..., :32], w[:, :, :32])
  _check_against(mine, lambda x, w: _lax_conv(x, w, (stride, stride), "SAME"), x, w)


@pytest.mark.parametrize("height, width, kernel, stride", WINOGRAD_CASES)
def test_winograd_conv2d_transpose_matches_lax_with_first_and_second_derivatives(height, width, kernel, stride):
  low_height, low_width = -(-height // stride), -(-width // stride)
  x, w = _random(0, (2, low_height, low_width, 4)), _random(1, (kernel, kernel, 4, 64)) / 2
  mine = lambda x, w: conv.conv2d_transpose(x, w, (stride, stride))
  assert _uses_winograd(mine, x, w)
  _check_against(mine, lambda x, w: lax.conv_transpose(x, w, (stride, stride), "SAME",
                                                       dimension_numbers=DIMENSION_NUMBERS), x, w)


@pytest.mark.parametrize("height, width, kernel, stride", WINOGRAD_CASES)
def test_winograd_takes_the_input_gradient_from_32_channels_and_the_other_faces_from_64(products_only, height, width,
                                                                                        kernel, stride):
  x, w = _random(0, (2, height, width, 32)), _random(1, (kernel, kernel, 32, 4)) / 8
  mine = lambda x, w: conv.conv2d(x, w, (stride, stride))
  input_gradient = lambda x, w: jax.grad(lambda x: jnp.sum(jnp.sin(mine(x, w))))(x)
  weight_gradient = lambda x, w: jax.grad(lambda w: jnp.sum(jnp.sin(mine(x, w))))(w)
  assert _uses_winograd(input_gradient, x, w) and not _uses_winograd(weight_gradient, x, w)
  _check_against(mine, lambda x, w: _lax_conv(x, w, (stride, stride), "SAME"), x, w)


@pytest.mark.parametrize("channels, faces", [(3, ["correlate", "correlate", "weight"]),
                                             (32, ["correlate", "scatter", "weight"]), (64, [])])
def test_onednn_takes_the_faces_winograd_does_not_and_the_input_gradient_into_images_in_subpixel_form(
    channels, faces, onednn_convolutions):
  """With oneDNN: Winograd keeps its faces (64 channels), oneDNN takes the others; the input gradient into 3 channels
  is oneDNN's stride-1 forward convolution into 2 * 2 * 3 channels (``conv._scatter_subpixel``), not its strided
  backward-data one."""
  x, w = _random(0, (2, 16, 15, channels)), _random(1, (5, 5, channels, 4)) / 8
  gradients = jax.grad(lambda x, w: jnp.sum(jnp.sin(conv.conv2d(x, w, (2, 2)))), argnums=(0, 1))
  assert sorted(_onednn_faces(gradients, x, w)) == faces
  assert _uses_winograd(gradients, x, w) == (channels == 64)


def test_weight_is_the_third_face_and_differentiates_to_the_other_two():
  """``weight(x, y)`` is the kernel gradient, and its own derivatives are scatter and correlate."""
  x, w = _random(0, (2, 9, 8, 3)), _random(1, (5, 5, 3, 4))
  geometry = conv.conv_geometry(x.shape[1:3], w.shape[:2], (2, 2), "SAME")
  y = _random(2, (2, geometry.height.low_size, geometry.width.low_size, 4))
  w_bar = _random(4, w.shape)

  def lax_weight_gradient(x, y):
    return jax.grad(lambda w: jnp.vdot(_lax_conv(x, w, (2, 2), "SAME"), y))(w)

  def value_and_vjp(x, y):
    value, vjp = jax.vjp(lambda x, y: conv.weight(x, y, geometry), x, y)
    reference_value, reference_vjp = jax.vjp(lax_weight_gradient, x, y)
    return (value, *vjp(w_bar)), (reference_value, *reference_vjp(w_bar))

  for mine, reference in zip(*_compile(value_and_vjp, x, y)(x, y)):
    _assert_close(mine, reference)


IMPLEMENTATIONS = {
    "matmul": (conv._correlate_matmul, conv._scatter_matmul, conv._weight_matmul),
    "native": (conv._correlate_native, conv._scatter_native, conv._weight_native),
    "onednn": (onednn.correlate, onednn.scatter, onednn.weight),
    "onednn_subpixel": (onednn.correlate, conv._scatter_subpixel, onednn.weight),
}


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("height, width, kernel, stride, padding", [CONV_CASES[0]] + CONV_CASES[3:])
def test_each_implementation_is_the_same_function(implementation, height, width, kernel, stride, padding, request):
  """The CPU's implementations of each face (matmul, oneDNN, the input gradient in sub-pixel form) and the native
  convolutions of other platforms, all run here, against lax's convolution and its autodiff; the cases include uneven
  strides, negative high padding (a tail no window reads) and explicit padding."""
  if implementation.startswith("onednn"):
    request.getfixturevalue("onednn_convolutions")
  correlate, scatter, weight = IMPLEMENTATIONS[implementation]
  x, w = _random(0, (2, height, width, 8)), _random(1, (kernel, kernel, 8, 4))
  strides = (stride, stride)
  geometry = conv.conv_geometry(x.shape[1:3], w.shape[:2], strides, padding)
  y_bar = _random(2, (2, geometry.height.low_size, geometry.width.low_size, 4))

  def faces_and_reference(x, w, y_bar):
    y, vjp = jax.vjp(lambda x, w: _lax_conv(x, w, strides, padding), x, w)
    faces = correlate(x, w, geometry), scatter(y_bar, w, geometry), weight(x, y_bar, geometry)
    return faces, (y, *vjp(y_bar))

  for mine, reference in zip(*_compile(faces_and_reference, x, w, y_bar)(x, w, y_bar)):
    _assert_close(mine, reference)


def test_lowered_cpu_code_has_no_convolution(products_only):
  """On XLA:CPU every face, and the penalty's double backward, is matrix products."""
  x, w = _random(0, (2, 8, 8, 3)), _random(1, (5, 5, 3, 4))
  penalty_grad = jax.jit(jax.grad(_penalty, argnums=(1, 2)), static_argnums=0)
  hlo = penalty_grad.lower(lambda x, w: conv.conv2d(x, w, (2, 2)), w, x).compile().as_text()
  assert " convolution(" not in hlo and " dot(" in hlo
  reference_hlo = penalty_grad.lower(lambda x, w: _lax_conv(x, w, (2, 2), "SAME"), w, x).compile().as_text()
  assert " convolution(" in reference_hlo


def test_cpu_products_are_row_major(products_only):
  """Every product of the faces and their derivatives contracts the left operand's minor axis with the right one's
  major axis: XLA:CPU hands other layouts to Eigen's transposed-operand GEMM, which ran the weight gradients at half
  YNNPACK's speed (the 32x32 critic step was 12-14% slower, Intel Xeon, 2026-12-02)."""
  x, w = _random(0, (2, 8, 8, 3)), _random(1, (5, 5, 3, 4))
  penalty_grad = jax.jit(jax.grad(_penalty, argnums=(1, 2)), static_argnums=0)
  for conv_fn in (lambda x, w: conv.conv2d(x, w, (2, 2)), lambda x, w: conv.conv2d_transpose(x, w, (2, 2))):
    hlo = penalty_grad.lower(conv_fn, w, x).compile().as_text()
    products = [line for line in hlo.splitlines() if " dot(" in line]
    assert len(products) == 6
    for line in products:
      assert "lhs_contracting_dims={1}, rhs_contracting_dims={0}" in line, line


class _Net(nn.Module):
  """Every layer kind and option the models use, in one module."""
  conv_cls: type
  conv_transpose_cls: type

  @nn.compact
  def __call__(self, x):
    x = nn.relu(self.conv_transpose_cls(6, (5, 5), strides=(2, 2))(x))
    x = nn.relu(self.conv_cls(5, (3, 3))(x))
    x = self.conv_cls(4, (1, 1), use_bias=False)(x)
    x = self.conv_transpose_cls(3, (3, 3), transpose_kernel=True)(x)
    return self.conv_cls(2, (5, 5), strides=(2, 2))(x)


def test_layers_have_flax_parameters_and_outputs():
  x = _random(0, (2, 5, 7, 3))
  mine, reference = _Net(layers.Conv, layers.ConvTranspose), _Net(nn.Conv, nn.ConvTranspose)
  key = jax.random.key(1)
  variables = _compile(mine.init, key, x)(key, x)
  reference_variables = _compile(reference.init, key, x)(key, x)
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, reference_variables)
  for leaf, reference_leaf in zip(jax.tree.leaves(variables), jax.tree.leaves(reference_variables)):
    np.testing.assert_array_equal(leaf, reference_leaf)  # same names, shapes and initialisers
  _assert_close(_compile(mine.apply, variables, x)(variables, x), _compile(reference.apply, variables, x)(variables, x))


class _FlaxBatchNormReLU(nn.BatchNorm):

  def __call__(self, x, use_running_average=None):
    return nn.relu(super().__call__(x, use_running_average))


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_batch_norm_is_flax_batch_norm_with_its_gradients_and_statistics(dtype, relu):
  """layers.BatchNorm against nn.BatchNorm (then nn.relu where ``relu``): the same variables, training-mode outputs,
  gradients of the input, scale and bias (a nonlinear loss, under jit), running statistics, and evaluation-mode
  outputs; float32 inputs computed in ``dtype``, and bfloat16 inputs."""
  x = _random(0, (8, 5, 6, 4)) * 3 + 1
  cotangent = _random(3, x.shape)
  for inputs in ([x, x.astype(jnp.bfloat16)] if dtype == "bfloat16" else [x]):
    mine = layers.BatchNorm(momentum=0.9, dtype=dtype, relu=relu)
    reference = (_FlaxBatchNormReLU if relu else nn.BatchNorm)(momentum=0.9, dtype=dtype)
    variables = mine.init(jax.random.key(1), inputs, use_running_average=False)
    reference_variables = reference.init(jax.random.key(1), inputs, use_running_average=False)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, reference_variables)
    variables = {"params": {"scale": jnp.linspace(0.5, 2.0, 4), "bias": jnp.linspace(-1.0, 1.0, 4)},
                 "batch_stats": {"mean": jnp.linspace(0.0, 0.3, 4), "var": jnp.linspace(1.0, 2.0, 4)}}

    def train_and_evaluate(module, variables, inputs):
      def loss(params, inputs):
        y, updates = module.apply({**variables, "params": params}, inputs, use_running_average=False,
                                  mutable=["batch_stats"])
        return jnp.sum(jnp.sin(y.astype(jnp.float32)) * cotangent), (y, updates["batch_stats"])
      (_, (y, statistics)), gradients = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
          variables["params"], inputs)
      evaluated = module.apply({**variables, "batch_stats": statistics}, inputs, use_running_average=True)
      return y, gradients, statistics, evaluated

    results = jax.jit(functools.partial(train_and_evaluate, mine))(variables, inputs)
    reference_results = jax.jit(functools.partial(train_and_evaluate, reference))(variables, inputs)
    assert results[0].dtype == results[3].dtype == jnp.dtype(dtype)
    assert jax.tree.map(lambda a: a.dtype, results) == jax.tree.map(lambda a: a.dtype, reference_results)
    tolerance = 2e-5 if dtype == "float32" else 2e-2
    for mine_result, reference_result in zip(results, reference_results):
      _assert_close(jax.tree.map(lambda a: a.astype(jnp.float32), mine_result),
                    jax.tree.map(lambda a: a.astype(jnp.float32), reference_result), rtol=tolerance)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_dense_is_flax_dense_with_first_and_second_derivatives(dtype):
  """layers.Dense against nn.Dense: the same parameters, outputs, gradients, and the gradient of a penalty on the
  input gradient (the critic's double backward), under jit."""
  x = _random(0, (6, 2, 5))
  mine, reference = layers.Dense(3, dtype=dtype), nn.Dense(3, dtype=dtype)
  variables = mine.init(jax.random.key(1), x)
  reference_variables = reference.init(jax.random.key(1), x)
  for leaf, reference_leaf in zip(jax.tree.leaves(variables), jax.tree.leaves(reference_variables)):
    np.testing.assert_array_equal(leaf, reference_leaf)
  variables = {"params": {"kernel": _random(2, (5, 3)), "bias": _random(3, (3,))}}
  cotangent = _random(4, (6, 2, 3))

  def derivatives(module, params, x):
    apply = lambda params, x: module.apply({"params": params}, x)
    y, vjp = jax.vjp(apply, params, x)
    penalty = lambda params: jnp.sum(jnp.square(jax.grad(lambda x: jnp.sum(jnp.tanh(apply(params, x))))(x)))
    return y, vjp(cotangent.astype(y.dtype)), jax.grad(penalty)(params)

  results = jax.jit(functools.partial(derivatives, mine))(variables["params"], x)
  reference_results = jax.jit(functools.partial(derivatives, reference))(variables["params"], x)
  assert jax.tree.map(lambda a: a.dtype, results) == jax.tree.map(lambda a: a.dtype, reference_results)
  to_float32 = lambda tree: jax.tree.map(lambda a: a.astype(jnp.float32), tree)
  for mine_result, reference_result in zip(results, reference_results):
    _assert_close(to_float32(mine_result), to_float32(reference_result), rtol=2e-5 if dtype == "float32" else 2e-2)


def test_dense_gradients_are_row_major_products_on_the_cpu():
  """The weight and input gradients of layers.Dense contract the left operand's minor axis with the right one's major
  axis (YNNPACK's GEMM), where nn.Dense's go to Eigen's transposed-operand GEMM."""
  x = _random(0, (64, 128))

  def products(module):
    variables = module.init(jax.random.key(1), x)
    gradients = jax.grad(lambda variables, x: jnp.sum(jnp.sin(module.apply(variables, x))), argnums=(0, 1))
    hlo = jax.jit(gradients).lower(variables, x).compile().as_text()
    return [line for line in hlo.splitlines() if " dot(" in line]

  mine = products(layers.Dense(256))
  assert len(mine) == 3
  assert all("lhs_contracting_dims={1}, rhs_contracting_dims={0}" in line for line in mine), mine
  assert not all("lhs_contracting_dims={1}, rhs_contracting_dims={0}" in line for line in products(nn.Dense(256)))


def test_batch_norm_gradient_matches_finite_differences():
  x, scale, bias = _random(0, (6, 3, 2, 3)), jnp.array([0.5, 1.0, 2.0]), jnp.array([0.1, -0.2, 0.3])
  loss = lambda x, scale, bias: jnp.sum(jnp.sin(layers.batch_norm(x, scale, bias, 1e-5)) * jnp.arange(x.size).reshape(
      x.shape) / x.size)
  check_grads(loss, (x, scale, bias), order=2, modes=["rev"], eps=1e-2, atol=2e-2, rtol=2e-2)


def test_batch_norm_refuses_settings_it_does_not_implement():
  x = _random(0, (4, 3, 3, 2))
  with pytest.raises(NotImplementedError, match="axis_name"):
    layers.BatchNorm(axis_name="batch").init(jax.random.key(0), x, use_running_average=False)
  with pytest.raises(NotImplementedError, match="use_fast_variance"):
    layers.BatchNorm(use_fast_variance=False).init(jax.random.key(0), x, use_running_average=False)


def test_layers_compute_in_the_requested_dtype():
  x = _random(0, (2, 8, 8, 3))
  layer = layers.Conv(4, (5, 5), strides=(2, 2), dtype=jnp.bfloat16)
  variables = layer.init(jax.random.key(0), x)
  assert variables["params"]["kernel"].dtype == jnp.float32
  y = layer.apply(variables, x)
  assert y.dtype == jnp.bfloat16
  _assert_close(y.astype(jnp.float32), nn.Conv(4, (5, 5), strides=(2, 2)).apply(variables, x), rtol=2e-2)


def test_bfloat16_convolutions_give_float32_kernel_gradients():
  """bfloat16 inputs and a float32 kernel: bfloat16 outputs and input gradients, float32 kernel gradients (first order
  and the penalty's second), within bfloat16 rounding of lax's float32 convolutions."""
  x, w = _random(0, (2, 8, 7, 3)), _random(1, (5, 5, 3, 4))
  for mine, reference in [
      (lambda x, w: conv.conv2d(x, w, (2, 2)), lambda x, w: _lax_conv(x, w, (2, 2), "SAME")),
      (lambda x, w: conv.conv2d_transpose(x, w, (2, 2)),
       lambda x, w: lax.conv_transpose(x, w, (2, 2), "SAME", dimension_numbers=DIMENSION_NUMBERS))]:
    cotangent = _random(3, jax.eval_shape(reference, x, w).shape)
    y, (x_bar, w_bar), (w_second, x_second) = _value_gradients_and_penalty_gradients(
        mine, x.astype(jnp.bfloat16), w, cotangent.astype(jnp.bfloat16))
    assert y.dtype == x_bar.dtype == x_second.dtype == jnp.bfloat16
    assert w_bar.dtype == w_second.dtype == jnp.float32
    reference_y, reference_first, reference_second = _value_gradients_and_penalty_gradients(reference, x, w, cotangent)
    _assert_close(y.astype(jnp.float32), reference_y, rtol=2e-2)
    _assert_close((x_bar.astype(jnp.float32), w_bar), reference_first, rtol=2e-2)
    _assert_close((w_second, x_second.astype(jnp.float32)), reference_second, rtol=5e-2)


@pytest.mark.parametrize("model", ["dcgan", "resnet"])
def test_bfloat16_models_penalty_loss_and_gradients_are_close_to_float32(model):
  """Same parameters, same inputs: the bfloat16 critic's penalty, loss and parameter gradients, and the bfloat16
  generator's samples, are the float32 ones to bfloat16's precision."""
  real, fake = jnp.tanh(_random(0, (8, 16, 16, 3))), jnp.tanh(_random(1, (8, 16, 16, 3)))
  config = configuration.override(configuration.default_config("image"), {
      "model.name": model, "model.width": 8, "data.resolution": 16, "model.latent_dim": 16})
  models = build_models(config)
  key, z = jax.random.key(2), jnp.zeros((1, 16))
  params = _compile(models.critic.init, key, real)(key, real)["params"]
  generator_variables = _compile(lambda key, z: models.generator.init(key, z, train=False), key, z)(key, z)
  results = {}
  for dtype in ("float32", "bfloat16"):
    models = build_models(configuration.override(config, {"model.dtype": dtype}))

    def compute(params, generator_variables):
      loss_fn = lambda p: losses.wgan_gp_critic_loss(
          lambda x: models.critic.apply({"params": p}, x), real, fake, jax.random.key(3))
      (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      samples, _ = models.generator.apply(generator_variables, _random(5, (8, 16)), train=True, mutable=["batch_stats"])
      return loss, metrics["gradient_penalty"], grads, samples
    results[dtype] = _compile(compute, params, generator_variables)(params, generator_variables)
  (loss, penalty, grads, samples), (reference_loss, reference_penalty, reference_grads, reference_samples) = (
      results["bfloat16"], results["float32"])
  assert loss.dtype == penalty.dtype == samples.dtype == jnp.float32
  assert {leaf.dtype for leaf in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}
  np.testing.assert_allclose(penalty, reference_penalty, rtol=2e-2)
  np.testing.assert_allclose(loss, reference_loss, rtol=2e-2)
  # The parameter gradients differ by about 2.3% of their norm (measured, both models), a few entries by 4-5% of the
  # largest: the penalty's double backward adds terms that cancel, each rounded to bfloat16.
  difference = optax.tree.norm(jax.tree.map(lambda a, b: a - b, grads, reference_grads))
  assert difference < 6e-2 * optax.tree.norm(reference_grads)
  _assert_close(samples, reference_samples, rtol=5e-2)


def test_unsupported_options_are_refused():
  x = _random(0, (2, 8, 8, 3))
  with pytest.raises(NotImplementedError):
    layers.Conv(4, (3, 3), kernel_dilation=2).init(jax.random.key(0), x)
  with pytest.raises(NotImplementedError):
    layers.Conv(4, (3, 3), feature_group_count=3).init(jax.random.key(0), x)


@pytest.mark.parametrize("model, resolution", [("dcgan", 16), ("resnet", 16)])
def test_models_penalty_gradients_match_plain_flax(cpu_path, model, resolution):
  """The critic loss and its parameter gradients (double backward) equal those of plain flax layers
  (``model.kernels="xla"``)."""
  config = configuration.override(configuration.default_config("image"), {
      "model.name": model, "model.width": 8, "data.resolution": resolution, "model.kernels": "cpu"})
  real, fake = _random(0, (4, resolution, resolution, 3)), _random(1, (4, resolution, resolution, 3))
  key = jax.random.key(2)
  critic = build_models(config).critic
  params = _compile(critic.init, key, real)(key, real)["params"]  # jitted: eager flax init takes seconds

  def loss_and_grads(kernels):
    critic = build_models(configuration.override(config, {"model.kernels": kernels})).critic
    loss_fn = lambda p: losses.wgan_gp_critic_loss(
        lambda x: critic.apply({"params": p}, x), real, fake, jax.random.key(3))[0]
    return _compile(jax.value_and_grad(loss_fn), params)(params)

  loss, grads = loss_and_grads("cpu")
  reference_loss, reference_grads = loss_and_grads("xla")
  _assert_close(loss, reference_loss, rtol=1e-5)
  _assert_close(grads, reference_grads, rtol=1e-5)


@pytest.mark.parametrize("model", ["dcgan", "resnet"])
def test_generator_outputs_and_gradients_match_plain_flax(cpu_path, model):
  config = configuration.override(configuration.default_config("image"), {
      "model.name": model, "model.width": 8, "data.resolution": 16, "model.latent_dim": 16, "model.kernels": "cpu"})
  z = _random(0, (4, 16))
  key = jax.random.key(1)
  generator = build_models(config).generator
  variables = _compile(lambda key, z: generator.init(key, z, train=False), key, z)(key, z)
  direction = _random(2, (4, 16, 16, 3))

  def samples_and_grads(kernels):
    generator = build_models(configuration.override(config, {"model.kernels": kernels})).generator

    def objective(params):
      samples, _ = generator.apply({**variables, "params": params}, z, train=True, mutable=["batch_stats"])
      return jnp.vdot(samples, direction), samples
    return _compile(jax.value_and_grad(objective, has_aux=True), variables["params"])(variables["params"])

  (_, samples), grads = samples_and_grads("cpu")
  (_, reference_samples), reference_grads = samples_and_grads("xla")
  _assert_close(samples, reference_samples)
  _assert_close(grads, reference_grads, rtol=1e-5)
