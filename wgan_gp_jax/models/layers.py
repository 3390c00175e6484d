"""Layers shared by the image models: convolutions (NHWC, kernels HWIO, flax's layout), dense layers, batch norm.

``Conv`` and ``ConvTranspose`` are flax's ``nn.Conv`` and ``nn.ConvTranspose`` (same attributes, parameter
names, shapes, initialisers and outputs) computed by ``wgan_gp_jax.conv``, whose
convolutions and derivatives of every order are matrix products on XLA:CPU and
native convolutions elsewhere. ``Dense`` is flax's ``nn.Dense`` whose gradients are row-major products on XLA:CPU
(``matmul``), and ``BatchNorm`` flax's ``nn.BatchNorm`` over the channel axis whose training-mode normalisation has a
hand-written gradient (``batch_norm``).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from wgan_gp_jax import conv


def _pair(value: int | tuple[int, ...] | None, name: str) -> tuple[int, int]:
  if value is None:
    return (1, 1)
  if isinstance(value, int):
    return (value, value)
  if len(value) != 2:
    raise ValueError(f"{name} must have two entries (height, width), got {value}.")
  return tuple(value)


def _check_supported(module: nn.Module, inputs: jax.Array, dilations: dict[str, object]) -> None:
  if inputs.ndim != 4:
    raise ValueError(f"{type(module).__name__} takes NHWC inputs, got shape {inputs.shape}.")
  for name, value in dilations.items():
    if _pair(value, name) != (1, 1):
      raise NotImplementedError(f"{type(module).__name__} does not support {name}={value}.")
  if module.mask is not None:
    raise NotImplementedError(f"{type(module).__name__} does not support masks.")


class Conv(nn.Conv):
  """A 2-D convolution with 'SAME' padding; ``strides=2`` halves the resolution."""
  padding: str = "SAME"

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    _check_supported(self, inputs, {"input_dilation": self.input_dilation, "kernel_dilation": self.kernel_dilation})
    if self.feature_group_count != 1:
      raise NotImplementedError(f"Conv does not support feature_group_count={self.feature_group_count}.")
    kernel_size = _pair(self.kernel_size, "kernel_size")
    kernel = self.param("kernel", self.kernel_init, kernel_size + (inputs.shape[-1], self.features), self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
    inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    padding = self.padding if isinstance(self.padding, str) else nn.linear.canonicalize_padding(self.padding, 2)
    y = conv.conv2d(inputs, kernel, _pair(self.strides, "strides"), padding)
    return y if bias is None else y + bias


class ConvTranspose(nn.ConvTranspose):
  """A 2-D transposed convolution with 'SAME' padding; ``strides=2`` doubles the resolution."""
  padding: str = "SAME"

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    _check_supported(self, inputs, {"kernel_dilation": self.kernel_dilation})
    kernel_size = _pair(self.kernel_size, "kernel_size")
    channels = (self.features, inputs.shape[-1]) if self.transpose_kernel else (inputs.shape[-1], self.features)
    kernel = self.param("kernel", self.kernel_init, kernel_size + channels, self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
    inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    if self.transpose_kernel:
      # lax.conv_transpose(transpose_kernel=True) flips the kernel and swaps its channel axes.
      kernel = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
    y = conv.conv2d_transpose(inputs, kernel, _pair(self.strides, "strides"), self.padding)
    return y if bias is None else y + bias


def _row_major_product(a: jax.Array, b: jax.Array) -> jax.Array:
  """``a @ b`` for ``a`` (M, K) and ``b`` (K, N) in row-major layout, in their dtype.

  XLA:CPU hands a product whose operands are transposed (contracting another axis than the left operand's minor and
  the right one's major) to Eigen's transposed-operand GEMM: the generator's dense-layer weight gradient (a 128x64 by
  64x2048 product) took 0.6-1 ms a step there, 0.3 ms as a row-major product (YNNPACK's GEMM). The barriers keep
  XLA's simplifier from folding the transposes written by the caller back into the product.
  """
  a, b = lax.optimization_barrier(a), lax.optimization_barrier(b)
  # No float32 result type for bfloat16 operands: its derivative (the penalty's double backward) would multiply
  # float32 cotangents by bfloat16 operands.
  return lax.optimization_barrier(jnp.dot(a, b))


@jax.custom_vjp
def matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """``x @ kernel`` over x's last axis (``nn.Dense``'s product), in x's dtype; on XLA:CPU its input and weight gradients
  are row-major products of explicitly transposed operands (``_row_major_product``), elsewhere lax's. Reverse mode, to
  any order."""
  return jnp.dot(x, kernel)


def _matmul_forward(x, kernel):
  return jnp.dot(x, kernel), (x, kernel)


def _matmul_backward(residuals, y_bar):
  x, kernel = residuals
  rows = y_bar.reshape(-1, y_bar.shape[-1])
  x_rows = x.reshape(-1, x.shape[-1])

  def on_cpu(x_rows, kernel, rows):
    return _row_major_product(rows, kernel.T), _row_major_product(x_rows.T, rows)

  def elsewhere(x_rows, kernel, rows):
    return rows @ kernel.T, x_rows.T @ rows

  x_bar, kernel_bar = lax.platform_dependent(x_rows, kernel, rows, cpu=on_cpu, default=elsewhere)
  return x_bar.reshape(x.shape).astype(x.dtype), kernel_bar.astype(kernel.dtype)


matmul.defvjp(_matmul_forward, _matmul_backward)


class Dense(nn.Dense):
  """flax's ``nn.Dense`` (same attributes, parameters and outputs) by ``matmul``."""

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    if self.dot_general is not None or self.dot_general_cls is not None or self.precision is not None:
      raise NotImplementedError("Dense does not support dot_general, dot_general_cls or precision.")
    kernel = self.param("kernel", self.kernel_init, (inputs.shape[-1], self.features), self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
    inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    y = matmul(inputs, kernel)
    return y if bias is None else y + bias


def _batch_statistics(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-channel mean and (biased) variance over every other axis, in float32, as flax's fast variance."""
  axes = tuple(range(x.ndim - 1))
  x = x.astype(jnp.float32)
  mean = jnp.mean(x, axes)
  return mean, jnp.maximum(jnp.mean(jnp.square(x), axes) - jnp.square(mean), 0.0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float) -> jax.Array:
  """``(x - mean) / sqrt(var + epsilon) * scale + bias`` with the batch's per-channel statistics (last axis).

  The same function as ``nn.BatchNorm`` in training mode, with its gradient written out: the normalised input is
  recomputed from ``x`` in the backward pass rather than kept, and the two sums the gradient needs come from one
  pass (autodiff kept ``x - mean`` and the statistics' own derivatives; the 32x32 DCGAN generator step was 3% faster
  this way, Intel Xeon model 167, 2026-12-03). Statistics and gradients of ``scale`` and ``bias`` are float32; the
  output and ``x``'s gradient have ``x``'s dtype. Reverse mode, to any order.
  """
  return _batch_norm_forward(x, scale, bias, epsilon)[0]


def _batch_norm_forward(x, scale, bias, epsilon):
  mean, var = _batch_statistics(x)
  inverse_std = lax.rsqrt(var + epsilon)
  multiplier = scale * inverse_std
  y = (x.astype(jnp.float32) * multiplier + (bias - mean * multiplier)).astype(x.dtype)
  return y, (x, mean, inverse_std, scale)


def _batch_norm_backward(epsilon, residuals, y_bar):
  del epsilon
  x, mean, inverse_std, scale = residuals
  axes = tuple(range(x.ndim - 1))
  count = x.size // x.shape[-1]
  y_bar = y_bar.astype(jnp.float32)
  normalised = (x.astype(jnp.float32) - mean) * inverse_std
  bias_bar = jnp.sum(y_bar, axes)
  scale_bar = jnp.sum(y_bar * normalised, axes)
  x_bar = (scale * inverse_std / count) * (count * y_bar - bias_bar - normalised * scale_bar)
  return x_bar.astype(x.dtype), scale_bar.astype(scale.dtype), bias_bar.astype(scale.dtype)


batch_norm.defvjp(_batch_norm_forward, _batch_norm_backward)


class BatchNorm(nn.BatchNorm):
  """flax's ``nn.BatchNorm`` over the last axis (same attributes, parameters, batch statistics and outputs), its
  training-mode normalisation by ``batch_norm``. Statistics over a mapped axis (``axis_name``), masks, other axes and
  the two-pass variance are not supported."""

  @nn.compact
  def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
    use_running_average = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
    unsupported = {"axis": self.axis not in (-1, x.ndim - 1), "axis_name": self.axis_name is not None,
                   "use_fast_variance": not self.use_fast_variance, "use_scale": not self.use_scale,
                   "use_bias": not self.use_bias, "force_float32_reductions": not self.force_float32_reductions}
    if any(unsupported.values()):
      names = ", ".join(name for name, value in unsupported.items() if value)
      raise NotImplementedError(f"BatchNorm does not support these settings of nn.BatchNorm: {names}.")
    features = (x.shape[-1],)
    running_mean = self.variable("batch_stats", "mean", lambda shape: jnp.zeros(shape, jnp.float32), features)
    running_var = self.variable("batch_stats", "var", lambda shape: jnp.ones(shape, jnp.float32), features)
    scale = self.param("scale", self.scale_init, features, self.param_dtype)
    bias = self.param("bias", self.bias_init, features, self.param_dtype)
    dtype = self.dtype or jnp.promote_types(x.dtype, self.param_dtype)
    scale, bias = scale.astype(jnp.float32), bias.astype(jnp.float32)
    if use_running_average:
      multiplier = scale * lax.rsqrt(running_var.value + self.epsilon)
      return ((x.astype(jnp.float32) - running_mean.value) * multiplier + bias).astype(dtype)
    if not self.is_initializing():
      mean, var = lax.stop_gradient(_batch_statistics(x))
      running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean
      running_var.value = self.momentum * running_var.value + (1 - self.momentum) * var
    return batch_norm(x, scale, bias, self.epsilon).astype(dtype)
