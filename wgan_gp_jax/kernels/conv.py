r"""2-D convolutions as explicit matrix products, with first and second derivatives to match.

A strided convolution, its transpose and its weight gradient are three faces of
one trilinear form. Per spatial axis, with kernel size ``k``, stride ``s`` and
low padding ``L``, a high-resolution signal ``x`` (length ``H``), a kernel ``w``
and a low-resolution signal ``y`` (length ``h``) meet in

.. math::
  T(x, w, y) = \sum_{o < h} \sum_{t < k} \sum_{c, d} x_{s o + t - L,\, c}\; w_{t, c, d}\; y_{o, d},

where terms whose ``x`` index falls outside ``[0, H)`` are the zero padding.
Its three partial gradients are the three operations a WGAN-GP step needs:

* ``correlate(x, w) = dT/dy``: the convolution (``lax.conv_general_dilated``);
* ``scatter(y, w) = dT/dx``: the transposed convolution, i.e. the input gradient;
* ``weight(x, y) = dT/dw``: the weight gradient.

The derivatives of each are the other two (``T`` is linear in each argument), so
the penalty's double backward through a critic stays inside this family. Each
operation is a ``jax.custom_vjp`` whose backward pass calls the others, and each
is one matrix product plus data movement on XLA:CPU:

* ``correlate``: gather the ``k*k`` shifted, strided windows of the padded input
  into a patch matrix ``(N h w, k k C)`` and multiply by the kernel as a
  ``(k k C, D)`` matrix (im2col);
* ``scatter``: multiply ``y`` by the transposed kernel matrix to get one
  contribution per (output pixel, tap), then add the contributions up
  (col2im). Writing the tap ``t = s u + r`` splits the sum into ``ceil(k/s)^2``
  shifted additions on the space-to-depth grid (sub-pixel form), with no strided
  writes;
* ``weight``: ``y`` transposed times the patch matrix.

Kernels of three taps per stride (5x5 stride 2, 3x3 stride 1) with 64 or more
input channels (32 or more for the input gradient) take Winograd's ``F(4, 3)``
on the space-to-depth grid instead (``winograd.correlate``, ``scatter``,
``weight``; float32 only): 2.8x fewer multiplications than im2col for the 5x5
stride-2 kernels, 4x for the 3x3 ones, and tiles a third the size of the patch
matrices (``_winograd_pays`` says where they are taken).

Where oneDNN is installed (Linux x86-64, ``onednn.enabled``), the float32
faces Winograd does not take run as oneDNN's direct convolutions instead, XLA
FFI custom calls that write no patch matrices (``onednn.correlate``,
``scatter``, ``weight``); the input gradient into fewer than 8 channels (an
image) runs in sub-pixel form, as oneDNN's stride-1 forward convolution into
``s * s`` times the channels followed by depth to space (``_scatter_subpixel``).
``use_onednn=False`` (an argument of every face and entry point, kept by their
derivatives) leaves oneDNN out: im2col, col2im and Winograd only.

XLA:CPU turns its native strided and transposed convolutions and their
gradients into slow loops (a few GFLOP/s), while matrix products run near the
machine's peak; on GPU and TPU the native convolutions are the fast ones, so
each operation picks its implementation per platform with
``lax.platform_dependent``. Both are the same function, checked by the tests
against ``lax.conv_general_dilated`` and its autodiff.

Reverse mode only, to any order: forward mode (``jax.jvp``, ``jax.jacfwd``)
through a ``custom_vjp`` raises.

``conv2d`` and ``conv2d_transpose`` compute in their input's dtype (the kernel is
cast to it), and every derivative has the dtype of the argument it is taken with
respect to: bfloat16 activations with a float32 kernel give bfloat16 outputs and
a float32 kernel gradient. On XLA:CPU the products of bfloat16 operands, and
``scatter``'s additions of the contributions, accumulate in float32 and are
rounded to bfloat16 once.
"""

import dataclasses
import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from wgan_gp_jax.kernels import onednn, winograd

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
# oneDNN's backward-data convolution into an image (3 channels) was 1.3-3x slower than col2im's products (batch 64,
# 32x32 and 64x64, Intel Xeon model 167, 2026-12-03), and the sub-pixel form faster than both; from 32 channels the
# backward-data convolution beat the sub-pixel form (32x32 steps 3-4% slower with it up to 32 channels).
_ONEDNN_MIN_SCATTER_CHANNELS = 8


def _accumulation_dtype(dtype) -> jnp.dtype:
  """What products and sums of ``dtype`` operands accumulate in: float32 for bfloat16 (and float32) operands."""
  return jnp.promote_types(dtype, jnp.float32)


@dataclasses.dataclass(frozen=True)
class Axis:
  """One spatial axis of the trilinear form: ``x`` index ``s * o + t - low_padding``."""
  kernel: int
  stride: int
  low_padding: int
  high_size: int  # length of x
  low_size: int  # length of y

  @property
  def padded_size(self) -> int:
    """Length of x padded so that every window of every output lies inside it."""
    return self.stride * (self.low_size - 1) + self.kernel

  @property
  def high_padding(self) -> int:
    """Padding after x (negative: x's tail is read by no window)."""
    return self.padded_size - self.low_padding - self.high_size


@dataclasses.dataclass(frozen=True)
class Geometry:
  """The two spatial axes (height, width) of a convolution."""
  height: Axis
  width: Axis

  @property
  def axes(self) -> tuple[Axis, Axis]:
    return self.height, self.width


def conv_geometry(input_size: Sequence[int], kernel_size: Sequence[int], strides: Sequence[int],
                  padding: str | Sequence[tuple[int, int]]) -> Geometry:
  """The geometry of ``lax.conv_general_dilated(x, w, strides, padding)`` for x of spatial size ``input_size``."""
  if isinstance(padding, str):
    pads = lax.padtype_to_pads(tuple(input_size), tuple(kernel_size), tuple(strides), padding)
  else:
    pads = [tuple(p) for p in padding]
  axes = []
  for size, k, s, (low, high) in zip(input_size, kernel_size, strides, pads):
    if low < 0 or high < 0:
      raise ValueError(f"negative padding is not supported, got {pads}.")
    axes.append(Axis(k, s, low, size, (size + low + high - k) // s + 1))
  return Geometry(*axes)


def conv_transpose_geometry(input_size: Sequence[int], kernel_size: Sequence[int], strides: Sequence[int],
                            padding: str) -> Geometry:
  """The geometry of ``lax.conv_transpose(y, K, strides, padding)`` seen as the transpose of a convolution.

  ``lax.conv_transpose`` correlates the stride-dilated input, padded by
  ``(a, b)``, with ``K``; with ``w = K`` flipped in space and its channel axes
  swapped this is ``scatter(y, w)`` for low padding ``L = k - 1 - a`` and an
  output of length ``(n - 1) s + 1 + a + b - k + 1``.
  """
  if padding not in ("SAME", "VALID"):
    raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}.")
  axes = []
  for size, k, s in zip(input_size, kernel_size, strides):
    if padding == "SAME":
      pad_length = k + s - 2
      low = k - 1 if s > k - 1 else math.ceil(pad_length / 2)
    else:
      pad_length, low = 2 * (k - 1) + max(s - k, 0), k - 1
    high = pad_length - low
    output_size = (size - 1) * s + 1 + low + high - k + 1
    axes.append(Axis(k, s, k - 1 - low, output_size, size))
  return Geometry(*axes)


# ----------------------------------------------------------------------------------------------------
# XLA:CPU: matrix products.


def _pad_for_windows(x: jax.Array, geometry: Geometry) -> jax.Array:
  height, width = geometry.axes
  return lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (height.low_padding, height.high_padding, 0),
                                             (width.low_padding, width.high_padding, 0), (0, 0, 0)])


def _window(padded: jax.Array, geometry: Geometry, i: int, j: int) -> jax.Array:
  """The input pixels that tap (i, j) of every output reads: a strided slice, (N, h, w, C)."""
  height, width = geometry.axes
  n, _, _, channels = padded.shape
  return lax.slice(padded, (0, i, j, 0), (n, i + height.stride * (height.low_size - 1) + 1,
                                          j + width.stride * (width.low_size - 1) + 1, channels),
                   (1, height.stride, width.stride, 1))


def _patches(x: jax.Array, geometry: Geometry) -> jax.Array:
  """The im2col matrix of x, shape ``(N, h, w, kh * kw * C)``, taps ordered like an HWIO kernel.

  Stacked in two levels (taps of a kernel row, then rows): XLA:CPU fuses a
  concatenation of at most 8 operands into one loop, but materialises every
  operand of a wider one first.
  """
  height, width = geometry.axes
  padded = _pad_for_windows(x, geometry)
  rows = [jnp.stack([_window(padded, geometry, i, j) for j in range(width.kernel)], axis=3)
          for i in range(height.kernel)]
  return jnp.stack(rows, axis=3).reshape(x.shape[0], height.low_size, width.low_size, -1)


def _correlate_matmul(x: jax.Array, w: jax.Array, geometry: Geometry) -> jax.Array:
  patches = _patches(x, geometry)
  return jnp.dot(patches, w.reshape(-1, w.shape[-1]),
                 preferred_element_type=_accumulation_dtype(x.dtype)).astype(x.dtype)


def _weight_matmul(x: jax.Array, y: jax.Array, geometry: Geometry) -> jax.Array:
  patches = _patches(x, geometry)
  height, width = geometry.axes
  accumulation = _accumulation_dtype(x.dtype)
  # y^T @ patches as a row-major product (YNNPACK's GEMM): y (D columns) is cheaper to transpose than the patches
  # (kh kw C columns). The barriers keep XLA's simplifier from folding both transposes into the product, which then
  # runs as Eigen's transposed-operand GEMM at half the speed.
  y_transposed = lax.optimization_barrier(y.reshape(-1, y.shape[-1]).T)
  w = lax.optimization_barrier(
      jnp.dot(y_transposed, patches.reshape(-1, patches.shape[-1]), preferred_element_type=accumulation)).T
  return w.reshape(height.kernel, width.kernel, x.shape[-1], y.shape[-1]).astype(x.dtype)


def _scatter_matmul(y: jax.Array, w: jax.Array, geometry: Geometry) -> jax.Array:
  height, width = geometry.axes
  n, h, wd, _ = y.shape
  channels = w.shape[2]
  accumulation = _accumulation_dtype(y.dtype)
  # (N, h, w, kh, kw, C), added up below in the accumulation dtype and rounded to y's once at the end.
  contributions = lax.dot_general(y, w, (((3,), (3,)), ((), ())), preferred_element_type=accumulation)
  # Tap t = s u + r of output o lands on space-to-depth cell o + u, phase r: for each phase,
  # a sum of shifted slices of the contributions; the phases then interleave (depth to space).
  uh, uw = -(-height.kernel // height.stride), -(-width.kernel // width.stride)
  phases = []
  for rh in range(height.stride):
    row = []
    for rw in range(width.stride):
      total = jnp.zeros((n, h + uh - 1, wd + uw - 1, channels), accumulation)
      for a in range(uh):
        for b in range(uw):
          th, tw = height.stride * a + rh, width.stride * b + rw
          if th < height.kernel and tw < width.kernel:
            piece = contributions[:, :, :, th, tw, :]
            total = total + jnp.pad(piece, [(0, 0), (a, uh - 1 - a), (b, uw - 1 - b), (0, 0)])
      row.append(total)
    phases.append(jnp.stack(row, axis=3))  # (N, H', W', sw, C)
  interleaved = jnp.stack(phases, axis=2)  # (N, H', sh, W', sw, C)
  padded = interleaved.reshape(n, (h + uh - 1) * height.stride, (wd + uw - 1) * width.stride, channels).astype(y.dtype)
  return lax.pad(padded, jnp.zeros((), y.dtype), [
      (0, 0, 0), (-height.low_padding, height.high_size + height.low_padding - padded.shape[1], 0),
      (-width.low_padding, width.high_size + width.low_padding - padded.shape[2], 0), (0, 0, 0)])


def _subpixel_form(w: jax.Array, geometry: Geometry) -> tuple[jax.Array, Geometry, list[tuple[int, int]]]:
  """``scatter(y, w, geometry)`` as a stride-1 correlation: its kernel, its geometry and the rows and columns of
  ``y`` it reads (``(start, stop)`` per axis).

  Per axis, output pixel ``x[s p + r]`` (phase ``r < s``) is ``sum_u y[p - u] w[s u + r + L]``: a stride-1
  correlation of ``y`` over the offsets ``u`` some phase has a tap at, one block of output channels per phase. The
  kernel ``(a_h, a_w, D, s_h * s_w * C)`` holds at ``j = u_max - u`` the taps of every phase (zeros where a phase has
  none); the correlation's output ``(N, P, Q, s_h * s_w * C)``, ``P = ceil(H / s)``, is then interleaved (depth to
  space) and cropped to ``H``.
  """
  taps, axes, reads = [], [], []
  for axis in geometry.axes:
    us = [u for u in range(-axis.low_padding // axis.stride - 1, axis.kernel + 1)
          if any(0 <= axis.stride * u + r + axis.low_padding < axis.kernel for r in range(axis.stride))]
    # Tap of offset j = u_max - u and phase r; `kernel` (one past the last) is the zero tap padded on below.
    tap = [[t if 0 <= (t := axis.stride * u + r + axis.low_padding) < axis.kernel else axis.kernel
            for r in range(axis.stride)] for u in reversed(us)]
    taps.append(np.array(tap))
    outputs = -(-axis.high_size // axis.stride)
    # y padded by u_max before and by what the last output's window needs after; negative padding reads less of y.
    low, high = us[-1], outputs - us[0] - axis.low_size
    start, stop = max(-low, 0), axis.low_size + min(high, 0)
    axes.append(Axis(kernel=len(us), stride=1, low_padding=max(low, 0), high_size=stop - start, low_size=outputs))
    reads.append((start, stop))
  rows, columns = taps
  padded = jnp.pad(w, [(0, 1), (0, 1), (0, 0), (0, 0)])
  # (a_h, a_w, s_h, s_w, C, D) -> (a_h, a_w, D, s_h * s_w * C): phases major, channels minor, as depth to space reads.
  kernel = padded[rows[:, None, :, None], columns[None, :, None, :]]
  kernel = kernel.transpose(0, 1, 5, 2, 3, 4).reshape(len(rows), len(columns), w.shape[3], -1)
  return kernel, Geometry(*axes), reads


def _scatter_subpixel(y: jax.Array, w: jax.Array, geometry: Geometry) -> jax.Array:
  """``scatter`` as oneDNN's stride-1 forward convolution into ``s_h * s_w * C`` channels, then depth to space.

  For images (few channels), where it beats both oneDNN's strided backward-data convolution into the few channels and
  col2im's products (which write one contribution per tap, ``k * k * C`` channels, and add them up): BENCHMARKS.md.
  """
  kernel, subpixel, ((top, bottom), (left, right)) = _subpixel_form(w, geometry)
  height, width = geometry.axes
  n, channels = y.shape[0], w.shape[2]
  phases = onednn.correlate(y[:, top:bottom, left:right], kernel, subpixel)
  rows, columns = subpixel.height.low_size, subpixel.width.low_size
  interleaved = phases.reshape(n, rows, columns, height.stride, width.stride, channels).transpose(0, 1, 3, 2, 4, 5)
  x = interleaved.reshape(n, rows * height.stride, columns * width.stride, channels)
  return x[:, :height.high_size, :width.high_size]


def _winograd_pays(channels: int, geometry: Geometry, dtype, *, min_channels: int = 64) -> bool:
  """Whether the F(4, 3) faces (``winograd.correlate`` etc.) are taken for a convolution with ``channels`` inputs.

  float32 kernels of three taps per stride (``winograd.fits``), at least ``min_channels`` channels (64; 32 for the
  input gradient where oneDNN is off, against col2im) and a low-resolution side of at least 8 pixels unless there are
  256 channels or more: on smaller grids (an 8x8x64 input's four 4x4 outputs are one tile each) the transforms cost
  more than the products they save. Where each threshold was measured: BENCHMARKS.md (Winograd F(4, 3) for the
  training convolutions). float32 only: F(4, 3)'s transforms would amplify bfloat16's rounding.
  """
  return (dtype == jnp.float32 and winograd.fits(geometry) and channels >= min_channels
          and (geometry.height.low_size >= 8 or channels >= 256))


def _correlate_cpu(x: jax.Array, w: jax.Array, geometry: Geometry, use_onednn: bool) -> jax.Array:
  if _winograd_pays(x.shape[-1], geometry, x.dtype):
    return winograd.correlate(x, w, geometry)
  if use_onednn and onednn.enabled(x.dtype):
    return onednn.correlate(x, w, geometry)
  return _correlate_matmul(x, w, geometry)


def _scatter_cpu(y: jax.Array, w: jax.Array, geometry: Geometry, use_onednn: bool,
                 bias: jax.Array | None = None) -> jax.Array:
  channels, with_onednn = w.shape[2], use_onednn and onednn.enabled(y.dtype)
  # Against col2im Winograd's input gradient pays from 32 channels; against oneDNN's, from 64 as the other faces.
  if _winograd_pays(channels, geometry, y.dtype, min_channels=64 if with_onednn else 32):
    x = winograd.scatter(y, w, geometry)
  elif with_onednn and channels >= _ONEDNN_MIN_SCATTER_CHANNELS:
    return onednn.scatter(y, w, geometry, bias)  # the bias in oneDNN's kernel
  elif with_onednn:
    x = _scatter_subpixel(y, w, geometry)
  else:
    x = _scatter_matmul(y, w, geometry)
  return x if bias is None else x + bias


def _weight_cpu(x: jax.Array, y: jax.Array, geometry: Geometry, use_onednn: bool) -> jax.Array:
  if _winograd_pays(x.shape[-1], geometry, x.dtype):
    return winograd.weight(x, y, geometry)
  if use_onednn and onednn.enabled(x.dtype):
    return onednn.weight(x, y, geometry)
  return _weight_matmul(x, y, geometry)


# ----------------------------------------------------------------------------------------------------
# Other platforms: the native convolution and its exact transposes.


def _native_padding(geometry: Geometry) -> list[tuple[int, int]]:
  return [(axis.low_padding, axis.high_padding) for axis in geometry.axes]


def _correlate_native(x: jax.Array, w: jax.Array, geometry: Geometry) -> jax.Array:
  return lax.conv_general_dilated(x, w, tuple(a.stride for a in geometry.axes), _native_padding(geometry),
                                  dimension_numbers=_DIMENSION_NUMBERS)


def _x_shape(y: jax.Array, w: jax.Array, geometry: Geometry) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct((y.shape[0], geometry.height.high_size, geometry.width.high_size, w.shape[2]), y.dtype)


def _scatter_native(y: jax.Array, w: jax.Array, geometry: Geometry) -> jax.Array:
  transpose = jax.linear_transpose(lambda x: _correlate_native(x, w, geometry), _x_shape(y, w, geometry))
  return transpose(y)[0]


def _weight_native(x: jax.Array, y: jax.Array, geometry: Geometry) -> jax.Array:
  shape = jax.ShapeDtypeStruct((geometry.height.kernel, geometry.width.kernel, x.shape[-1], y.shape[-1]), x.dtype)
  transpose = jax.linear_transpose(lambda w: _correlate_native(x, w, geometry), shape)
  return transpose(y)[0]


# ----------------------------------------------------------------------------------------------------
# The three faces of T, each differentiable to any order through the other two; ``use_onednn`` (where oneDNN is
# enabled, whether the CPU branch may take its convolutions) goes with them into their derivatives.


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def correlate(x: jax.Array, w: jax.Array, geometry: Geometry, use_onednn: bool = True) -> jax.Array:
  """``y[o] = sum_t x[s o + t - L] w[t]``: the convolution, NHWC x HWIO -> NHWC."""
  return lax.platform_dependent(x, w, cpu=functools.partial(_correlate_cpu, geometry=geometry, use_onednn=use_onednn),
                                default=functools.partial(_correlate_native, geometry=geometry))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def scatter(y: jax.Array, w: jax.Array, geometry: Geometry, use_onednn: bool = True) -> jax.Array:
  """``x[j] = sum_{s o + t - L = j} y[o] w[t]^T``: the transposed convolution (input gradient of ``correlate``)."""
  return lax.platform_dependent(y, w, cpu=functools.partial(_scatter_cpu, geometry=geometry, use_onednn=use_onednn),
                                default=functools.partial(_scatter_native, geometry=geometry))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def weight(x: jax.Array, y: jax.Array, geometry: Geometry, use_onednn: bool = True) -> jax.Array:
  """``w[t] = sum_o x[s o + t - L]^T y[o]``: the weight gradient of ``correlate``."""
  return lax.platform_dependent(x, y, cpu=functools.partial(_weight_cpu, geometry=geometry, use_onednn=use_onednn),
                                default=functools.partial(_weight_native, geometry=geometry))


def _correlate_fwd(x, w, geometry, use_onednn):
  return correlate(x, w, geometry, use_onednn), (x, w)


def _correlate_bwd(geometry, use_onednn, residuals, y_bar):
  x, w = residuals
  return scatter(y_bar, w, geometry, use_onednn), weight(x, y_bar, geometry, use_onednn)


def _scatter_fwd(y, w, geometry, use_onednn):
  return scatter(y, w, geometry, use_onednn), (y, w)


def _scatter_bwd(geometry, use_onednn, residuals, x_bar):
  y, w = residuals
  return correlate(x_bar, w, geometry, use_onednn), weight(x_bar, y, geometry, use_onednn)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def scatter_with_bias(y: jax.Array, w: jax.Array, bias: jax.Array, geometry: Geometry,
                      use_onednn: bool = True) -> jax.Array:
  """``scatter(y, w) + bias``. On oneDNN's path this is oneDNN's deconvolution, which adds the bias in its kernel
  rather than in a pass of its own over the output."""
  return lax.platform_dependent(y, w, bias, cpu=lambda y, w, bias: _scatter_cpu(y, w, geometry, use_onednn, bias),
                                default=lambda y, w, bias: _scatter_native(y, w, geometry) + bias)


def _scatter_with_bias_fwd(y, w, bias, geometry, use_onednn):
  return scatter_with_bias(y, w, bias, geometry, use_onednn), (y, w)


def _scatter_with_bias_bwd(geometry, use_onednn, residuals, x_bar):
  y, w = residuals
  return (correlate(x_bar, w, geometry, use_onednn), weight(x_bar, y, geometry, use_onednn),
          jnp.sum(x_bar, axis=(0, 1, 2)))


def _weight_fwd(x, y, geometry, use_onednn):
  return weight(x, y, geometry, use_onednn), (x, y)


def _weight_bwd(geometry, use_onednn, residuals, w_bar):
  x, y = residuals
  return scatter(y, w_bar, geometry, use_onednn), correlate(x, w_bar, geometry, use_onednn)


correlate.defvjp(_correlate_fwd, _correlate_bwd)
scatter.defvjp(_scatter_fwd, _scatter_bwd)
scatter_with_bias.defvjp(_scatter_with_bias_fwd, _scatter_with_bias_bwd)
weight.defvjp(_weight_fwd, _weight_bwd)


# ----------------------------------------------------------------------------------------------------
# The lax-compatible entry points used by the layers.


def conv2d(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1),
           padding: str | Sequence[tuple[int, int]] = "SAME", *, use_onednn: bool = True) -> jax.Array:
  """``lax.conv_general_dilated(x, kernel, strides, padding)`` for NHWC inputs and HWIO kernels, in x's dtype (the
  kernel is cast to it; its gradient keeps the kernel's dtype). ``use_onednn=False``: on XLA:CPU without oneDNN's
  convolutions, here and in every derivative."""
  geometry = conv_geometry(x.shape[1:3], kernel.shape[:2], strides, padding)
  return correlate(x, kernel.astype(x.dtype), geometry, use_onednn)


def conv2d_transpose(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1), padding: str = "SAME",
                     bias: jax.Array | None = None, *, use_onednn: bool = True) -> jax.Array:
  """``lax.conv_transpose(x, kernel, strides, padding)`` (``transpose_kernel=False``), NHWC and HWIO, plus ``bias``
  (one per output channel) where given, in x's dtype (kernel and bias are cast to it; their gradients keep their
  dtypes). ``use_onednn`` as for ``conv2d``."""
  geometry = conv_transpose_geometry(x.shape[1:3], kernel.shape[:2], strides, padding)
  # lax.conv_transpose correlates with K unflipped; as the transpose of a convolution the
  # kernel is K flipped in space with its input and output channels swapped.
  w = jnp.flip(kernel.astype(x.dtype), (0, 1)).transpose(0, 1, 3, 2)
  if bias is None:
    return scatter(x, w, geometry, use_onednn)
  return scatter_with_bias(x, w, bias.astype(x.dtype), geometry, use_onednn)
