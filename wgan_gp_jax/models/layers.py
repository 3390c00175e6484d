"""Convolutions shared by the image models: 'SAME' padding, NHWC, kernels HWIO (flax's layout).

They are flax's ``nn.Conv`` and ``nn.ConvTranspose`` (same attributes, parameter
names, shapes, initialisers and outputs) computed by ``wgan_gp_jax.conv``, whose
convolutions and derivatives of every order are matrix products on XLA:CPU and
native convolutions elsewhere.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

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
