"""Layers shared by the image models: convolutions (NHWC, kernels HWIO, flax's layout), dense layers, batch norm.

``Conv`` and ``ConvTranspose`` are flax's ``nn.Conv`` and ``nn.ConvTranspose`` (same attributes, parameter
names, shapes, initialisers and outputs) computed by ``wgan_gp_jax.kernels.conv``, whose
convolutions and derivatives of every order are matrix products on XLA:CPU and
native convolutions elsewhere. ``Dense`` is flax's ``nn.Dense`` whose gradients are row-major products on XLA:CPU
(``matmul``), and ``BatchNorm`` flax's ``nn.BatchNorm`` over the channel axis (optionally with the ReLU after it)
whose training-mode normalisation has a hand-written gradient, and is oneDNN's on XLA:CPU (``batch_norm``).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from wgan_gp_jax.kernels import conv, onednn


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
    return conv.conv2d_transpose(inputs, kernel, _pair(self.strides, "strides"), self.padding, bias)


def _row_major_product(a: jax.Array, b: jax.Array) -> jax.Array:
  """``a @ b`` for ``a`` (M, K) and ``b`` (K, N) in row-major layout, in their dtype.

  XLA:CPU hands a product whose operands are transposed (contracting another axis than the left operand's minor and
  the right one's major) to Eigen's transposed-operand GEMM, slower than the row-major product (YNNPACK's GEMM) for
  the dense layers' weight gradients. The barriers keep XLA's simplifier from folding the transposes written by the
  caller back into the product.
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


def batch_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float, *, relu: bool = False) -> jax.Array:
  """``(x - mean) / sqrt(var + epsilon) * scale + bias`` with the batch's per-channel statistics (last axis), then
  ``max(., 0)`` where ``relu``.

  The same function as ``nn.BatchNorm`` in training mode (then ``nn.relu``), with its gradient written out: the
  normalised input is recomputed from ``x`` in the backward pass rather than kept, and the two sums the gradient needs
  come from one pass (autodiff keeps ``x - mean`` and the statistics' own derivatives). On XLA:CPU, float32, where
  oneDNN is installed (``onednn.enabled``), both passes are oneDNN's batch normalisation with the ReLU fused in (its
  variance from ``x - mean``, where flax's is ``E[x^2] - E[x]^2``), one pass over the activations each where XLA's
  took 3-5. Statistics and gradients of ``scale`` and ``bias`` are float32; the output and ``x``'s gradient have
  ``x``'s dtype. Reverse mode, to any order (oneDNN's passes differentiate as the reference ones).
  """
  return batch_norm_with_statistics(x, scale, bias, epsilon, relu=relu)[0]


def batch_norm_with_statistics(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float, *,
                               relu: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``batch_norm``'s output and the batch's mean and (biased) variance it used, float32, without gradients: for
  running averages."""
  y, mean, var = _batch_norm(x, scale, bias, epsilon, relu)
  return y, lax.stop_gradient(mean), lax.stop_gradient(var)


def _normalise(x, scale, bias, mean, var, epsilon, relu):
  multiplier = scale * lax.rsqrt(var + epsilon)
  y = x.astype(jnp.float32) * multiplier + (bias - mean * multiplier)
  return jnp.maximum(y, 0.0) if relu else y


def _forward_reference(x, scale, bias, epsilon, relu):
  mean, var = _batch_statistics(x)
  return _normalise(x, scale, bias, mean, var, epsilon, relu).astype(x.dtype), mean, var


def _backward_reference(x, scale, bias, mean, var, y_bar, epsilon, relu):
  axes = tuple(range(x.ndim - 1))
  count = x.size // x.shape[-1]
  inverse_std = lax.rsqrt(var + epsilon)
  y_bar = y_bar.astype(jnp.float32)
  normalised = (x.astype(jnp.float32) - mean) * inverse_std
  if relu:
    y_bar = jnp.where(normalised * scale + bias > 0, y_bar, 0.0)
  bias_bar = jnp.sum(y_bar, axes)
  scale_bar = jnp.sum(y_bar * normalised, axes)
  x_bar = (scale * inverse_std / count) * (count * y_bar - bias_bar - normalised * scale_bar)
  return x_bar.astype(x.dtype), scale_bar.astype(scale.dtype), bias_bar.astype(scale.dtype)


# oneDNN's two passes, each differentiable (to any order) as the reference pass it stands for.

@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _forward_onednn(x, scale, bias, epsilon, relu):
  return onednn.norm_forward(x, scale, bias, epsilon, relu)


def _forward_onednn_fwd(x, scale, bias, epsilon, relu):
  return _forward_onednn(x, scale, bias, epsilon, relu), (x, scale, bias)


def _forward_onednn_bwd(epsilon, relu, residuals, cotangents):
  _, vjp = jax.vjp(lambda *operands: _forward_reference(*operands, epsilon, relu), *residuals)
  return vjp(cotangents[:3])


_forward_onednn.defvjp(_forward_onednn_fwd, _forward_onednn_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8))
def _backward_onednn(x, scale, bias, mean, var, mask, y_bar, epsilon, relu):
  del bias  # the ReLU's mask stands for it
  return onednn.norm_backward(x, scale, mean, var, mask, y_bar, epsilon, relu)


def _backward_onednn_fwd(x, scale, bias, mean, var, mask, y_bar, epsilon, relu):
  return _backward_onednn(x, scale, bias, mean, var, mask, y_bar, epsilon, relu), (x, scale, bias, mean, var, mask,
                                                                                  y_bar)


def _backward_onednn_bwd(epsilon, relu, residuals, cotangents):
  x, scale, bias, mean, var, mask, y_bar = residuals
  _, vjp = jax.vjp(lambda *operands: _backward_reference(*operands, epsilon, relu), x, scale, bias, mean, var, y_bar)
  x_bar, scale_bar, bias_bar, mean_bar, var_bar, y_bar_bar = vjp(cotangents)
  return x_bar, scale_bar, bias_bar, mean_bar, var_bar, np.zeros(mask.shape, jax.dtypes.float0), y_bar_bar


_backward_onednn.defvjp(_backward_onednn_fwd, _backward_onednn_bwd)


def _uses_onednn(x: jax.Array) -> bool:
  return onednn.enabled(x.dtype) and x.ndim >= 2


def _mask_shape(x, epsilon, relu):
  return onednn.norm_mask_shape(x.shape, epsilon, relu) if _uses_onednn(x) else (0,)


def _forward(x, scale, bias, epsilon, relu):
  """``(y, mean, var, mask)``: oneDNN's pass on XLA:CPU where it is on (``mask`` its ReLU's), the reference's
  elsewhere (``mask`` empty)."""
  mask_shape = _mask_shape(x, epsilon, relu)

  def reference(x, scale, bias):
    return *_forward_reference(x, scale, bias, epsilon, relu), jnp.zeros(mask_shape, jnp.uint8)

  def on_cpu(x, scale, bias):
    return _forward_onednn(x, scale, bias, epsilon, relu) if _uses_onednn(x) else reference(x, scale, bias)

  return lax.platform_dependent(x, scale, bias, cpu=on_cpu, default=reference)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _batch_norm(x, scale, bias, epsilon, relu):
  return _forward(x, scale, bias, epsilon, relu)[:3]


def _batch_norm_fwd(x, scale, bias, epsilon, relu):
  y, mean, var, mask = _forward(x, scale, bias, epsilon, relu)
  return (y, mean, var), (x, scale, bias, mean, var, mask)


def _batch_norm_bwd(epsilon, relu, residuals, cotangents):
  # The statistics leave batch_norm_with_statistics without gradients: their cotangents are zero.
  y_bar = cotangents[0]
  x, scale, bias, mean, var, mask = residuals

  def reference(x, scale, bias, mean, var, mask, y_bar):
    return _backward_reference(x, scale, bias, mean, var, y_bar, epsilon, relu)

  def on_cpu(x, scale, bias, mean, var, mask, y_bar):
    if _uses_onednn(x):
      return _backward_onednn(x, scale, bias, mean, var, mask, y_bar, epsilon, relu)
    return reference(x, scale, bias, mean, var, mask, y_bar)

  return lax.platform_dependent(x, scale, bias, mean, var, mask, y_bar, cpu=on_cpu, default=reference)


_batch_norm.defvjp(_batch_norm_fwd, _batch_norm_bwd)


class BatchNorm(nn.BatchNorm):
  """flax's ``nn.BatchNorm`` over the last axis (same attributes, parameters, batch statistics and outputs), its
  training-mode normalisation by ``batch_norm``; ``relu=True`` applies ``nn.relu`` to the output (fused with the
  normalisation where ``batch_norm`` fuses it). Statistics over a mapped axis (``axis_name``), masks, other axes and
  the two-pass variance are not supported."""

  relu: bool = False

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
      y = (x.astype(jnp.float32) - running_mean.value) * multiplier + bias
      return (jnp.maximum(y, 0.0) if self.relu else y).astype(dtype)
    y, mean, var = batch_norm_with_statistics(x, scale, bias, self.epsilon, relu=self.relu)
    if not self.is_initializing():
      running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean
      running_var.value = self.momentum * running_var.value + (1 - self.momentum) * var
    return y.astype(dtype)
