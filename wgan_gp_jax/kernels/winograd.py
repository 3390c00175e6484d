r"""Convolutions by Winograd's minimal filtering on XLA:CPU: stride 1 for inference, and the three faces of training's.

``F(m, r)`` computes ``m`` outputs of a length-``r`` correlation from a tile of
``a = m + r - 1`` inputs with ``a`` multiplications instead of ``m r``
(Winograd 1980; Lavin and Gray 2016):

.. math::
  y = A^T \left[ (G g) \odot (B^T d) \right],

with ``A^T`` (m x a), ``G`` (a x r) and ``B^T`` (a x a) built from ``a - 1``
interpolation points and the point at infinity (Toom-Cook). Nested over height
and width, a convolution becomes: transform the overlapping input tiles
(additions only), ``a_h a_w`` independent matrix products of the transformed
tiles by the transformed kernel over the channels, transform back. For a 3x3
kernel with ``m = 4`` that is 36 products per 16 outputs instead of 144; for a
1x7 kernel 10 per 4 instead of 28.

The matrices here are exact rationals (the points 0, 1, -1, 2, -2, 1/2, -1/2, 3,
-3, ...), rounded to float32 once. The rounding error grows with the tile (more
and larger points): with the default ``m = 4`` and kernels up to 7, a float32
convolution differs from ``lax.conv_general_dilated`` in float64 by a few 1e-6
of its largest output, against about 1e-7 for a direct float32 one; the tests
pin these bounds.

XLA:CPU runs the native convolution at a fraction of its matrix product speed
and has no Winograd path of its own; GPUs and TPUs have fast native ones, so
:func:`conv2d` is meant for the CPU branch of a ``lax.platform_dependent``.
:func:`conv2d` is forward only (it is linear, so JAX traces derivatives, but they
are not fast). For training, :func:`correlate`, :func:`scatter` and :func:`weight`
are the three faces of ``conv.correlate`` (the convolution, its input gradient
and its weight gradient) by ``F(4, 3)`` on the space-to-depth grid, for kernels
of ``ceil(k / s) == 3`` taps per stride (5x5 stride 2, 3x3 stride 1); ``conv``
picks them on XLA:CPU where they are faster, and its ``custom_vjp`` rules make
them differentiable to any order.

References:
  Winograd, "Arithmetic Complexity of Computations", SIAM 1980.
  Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016.
"""

from __future__ import annotations

import functools
from fractions import Fraction
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["DEFAULT_TILE", "winograd_matrices", "conv2d", "fits", "correlate", "scatter", "weight"]

DEFAULT_TILE = 4
_POINTS = tuple(Fraction(p) for p in ("0", "1", "-1", "2", "-2", "1/2", "-1/2", "3", "-3", "1/3", "-1/3", "4",
                                      "-4", "1/4", "-1/4"))


def _inverse(matrix: list[list[Fraction]]) -> list[list[Fraction]]:
  """Exact Gauss-Jordan inverse of a small square matrix of Fractions."""
  n = len(matrix)
  rows = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(matrix)]
  for col in range(n):
    pivot = next(r for r in range(col, n) if rows[r][col] != 0)
    rows[col], rows[pivot] = rows[pivot], rows[col]
    scale = rows[col][col]
    rows[col] = [v / scale for v in rows[col]]
    for r in range(n):
      if r != col and rows[r][col] != 0:
        factor = rows[r][col]
        rows[r] = [v - factor * p for v, p in zip(rows[r], rows[col])]
  return [row[n:] for row in rows]


@functools.lru_cache(maxsize=None)
def winograd_matrices(output_tile: int, kernel_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(A^T, G, B^T)`` of ``F(output_tile, kernel_size)`` for correlation, as float64 arrays.

  ``A^T @ ((G @ g) * (B^T @ d))`` equals ``[sum_k g[k] d[i + k] for i < output_tile]`` for any ``d``
  of length ``output_tile + kernel_size - 1`` and ``g`` of length ``kernel_size``.

  Raises:
    ValueError: on a size below 1, or a tile too large for the tabulated points.
  """
  m, r = output_tile, kernel_size
  if m < 1 or r < 1:
    raise ValueError(f"output_tile and kernel_size must be at least 1, got {m} and {r}")
  a = m + r - 1
  if a - 1 > len(_POINTS):
    raise ValueError(f"F({m}, {r}) needs {a - 1} interpolation points; at most {len(_POINTS)} are tabulated")
  if a == 1:
    one = np.ones((1, 1))
    return one, one, one
  points = _POINTS[:a - 1]

  def norm(j: int) -> Fraction:
    value = Fraction(1)
    for l, q in enumerate(points):
      if l != j:
        value *= points[j] - q
    return value

  a_t = [[p ** i for p in points] + [Fraction(int(i == m - 1))] for i in range(m)]
  g = [[p ** k / norm(j) for k in range(r)] for j, p in enumerate(points)]
  g.append([Fraction(int(k == r - 1)) for k in range(r)])
  # A^T[i, j] G[j, k] depends on i + k = s only, so the identity fixes B^T as the inverse of
  # the a x a matrix of (s, j) -> p_j^s / norm_j, with the point at infinity contributing at s = a - 1.
  system = [[p ** s / norm(j) for j, p in enumerate(points)] + [Fraction(int(s == a - 1))] for s in range(a)]
  b_t = _inverse(system)
  return tuple(np.array([[float(v) for v in row] for row in mat]) for mat in (a_t, g, b_t))


def _combine(parts: Sequence[jax.Array], coefficients: np.ndarray) -> jax.Array:
  """``sum_i coefficients[i] * parts[i]``, skipping zeros and multiplying only where needed."""
  total = None
  for c, part in zip(coefficients, parts):
    if c == 0:
      continue
    term = part if c == 1 else -part if c == -1 else part * jnp.asarray(c, part.dtype)
    total = term if total is None else total + term
  return total


def _input_transform(padded: jax.Array, b_t_h: np.ndarray, b_t_w: np.ndarray, tile: tuple[int, int],
                     tiles: tuple[int, int]) -> jax.Array:
  """``B^T d B`` of every tile of ``padded`` ``(N, H, W, C)``: ``(a_h a_w, N t_h t_w, C)``.

  Tile ``(i, j)`` reads rows ``m_h i + (0..a_h-1)`` and columns ``m_w j + (0..a_w-1)``. The
  ``a_h a_w`` results are stacked in two levels (columns within a row, then rows): XLA:CPU fuses a
  concatenation of at most 8 operands into one loop but materialises every operand of a wider one
  first (one level of 36 took twice as long).
  """
  (mh, mw), (th, tw) = tile, tiles
  rows = [padded[:, r:r + mh * (th - 1) + 1:mh] for r in range(len(b_t_h))]
  stacked = []
  for coefficients in b_t_h:
    part = _combine(rows, coefficients)
    cols = [part[:, :, s:s + mw * (tw - 1) + 1:mw] for s in range(len(b_t_w))]
    stacked.append(jnp.stack([_combine(cols, c) for c in b_t_w]))
  return jnp.stack(stacked).reshape(len(b_t_h) * len(b_t_w), -1, padded.shape[-1])


def _output_transform(products: jax.Array, a_t_h: np.ndarray, a_t_w: np.ndarray, tile: tuple[int, int],
                      batch_and_tiles: tuple[int, int, int]) -> jax.Array:
  """``A^T M A`` of every tile, interleaved into the image: ``(a_h a_w, N t_h t_w, D)`` -> ``(N, m_h t_h, m_w t_w, D)``."""
  (mh, mw), (n, th, tw) = tile, batch_and_tiles
  ah, aw = a_t_h.shape[1], a_t_w.shape[1]
  m = products.reshape(ah, aw, n, th, tw, products.shape[-1])
  by_rows = [_combine([m[k] for k in range(ah)], coefficients) for coefficients in a_t_h]
  out = [jnp.stack([_combine([part[l] for l in range(aw)], c) for c in a_t_w], axis=3) for part in by_rows]
  return jnp.stack(out, axis=2).reshape(n, mh * th, mw * tw, products.shape[-1])


def _kernel_transform(kernel: jax.Array, g_h: np.ndarray, g_w: np.ndarray) -> jax.Array:
  """``G g G^T`` for every (in, out) channel pair of an HWIO kernel: ``(a_h a_w, C, D)``, in float32 or wider.

  One product with the Kronecker matrix: an einsum over the three factors becomes a batch of tiny
  products that XLA:CPU runs 10-100x slower.
  """
  kh, kw, channels, features = kernel.shape
  accumulate = jnp.promote_types(kernel.dtype, jnp.float32)
  u = jnp.dot(np.kron(g_h, g_w).astype(accumulate), kernel.reshape(kh * kw, channels * features).astype(accumulate),
              precision=lax.Precision.HIGHEST)
  return u.reshape(len(g_h) * len(g_w), channels, features)


def conv2d(x: jax.Array, kernel: jax.Array, padding: Sequence[tuple[int, int]],
           tiles: tuple[int, int] | None = None) -> jax.Array:
  """``lax.conv_general_dilated(x, kernel, (1, 1), padding)`` by Winograd ``F(m_h, k_h) x F(m_w, k_w)``.

  Args:
    x: ``(N, H, W, C)`` input.
    kernel: ``(k_h, k_w, C, D)`` (HWIO).
    padding: ``((low_h, high_h), (low_w, high_w))``, non-negative.
    tiles: outputs per tile ``(m_h, m_w)``; default :data:`DEFAULT_TILE` along an axis whose kernel
      is longer than 1, else 1.

  Returns:
    ``(N, H_out, W_out, D)`` in ``x``'s dtype.

  Raises:
    ValueError: on bad shapes or padding, or an empty output.
  """
  if x.ndim != 4 or kernel.ndim != 4 or x.shape[-1] != kernel.shape[2]:
    raise ValueError(f"expected NHWC x and HWIO kernel with matching channels, got {x.shape} and {kernel.shape}")
  (low_h, high_h), (low_w, high_w) = padding
  if min(low_h, high_h, low_w, high_w) < 0:
    raise ValueError(f"padding must be non-negative, got {padding}")
  n, h, w, channels = x.shape
  kh, kw, _, features = kernel.shape
  out_h, out_w = h + low_h + high_h - kh + 1, w + low_w + high_w - kw + 1
  if out_h < 1 or out_w < 1:
    raise ValueError(f"kernel {kernel.shape[:2]} is larger than the padded input {(h + low_h + high_h, w + low_w + high_w)}")
  if tiles is None:
    tiles = (DEFAULT_TILE if kh > 1 else 1, DEFAULT_TILE if kw > 1 else 1)
  mh, mw = tiles
  a_t_h, g_h, b_t_h = winograd_matrices(mh, kh)
  a_t_w, g_w, b_t_w = winograd_matrices(mw, kw)
  ah, aw = mh + kh - 1, mw + kw - 1
  th, tw = -(-out_h // mh), -(-out_w // mw)  # Tiles per axis; the last may overhang and is cropped.
  padded = jnp.pad(x, ((0, 0), (low_h, mh * th + kh - 1 - h - low_h), (low_w, mw * tw + kw - 1 - w - low_w), (0, 0)))

  v = _input_transform(padded, b_t_h, b_t_w, (mh, mw), (th, tw))

  accumulate = jnp.promote_types(x.dtype, jnp.float32)  # bfloat16 inputs sum in float32
  u = _kernel_transform(kernel, g_h, g_w).astype(x.dtype)
  products = lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,))), preferred_element_type=accumulate)
  out = _output_transform(products.astype(x.dtype), a_t_h, a_t_w, (mh, mw), (n, th, tw))
  return out[:, :out_h, :out_w]


# ----------------------------------------------------------------------------------------------------
# Training: the three faces of a convolution (``conv.correlate``, ``scatter``, ``weight``) by F(4, 3)
# on the space-to-depth grid.
#
# A kernel of k taps at stride s reads, for output o, the inputs s o + t - L; writing t = s u + r, it
# is a stride-1 correlation with ceil(k / s) taps u over the space-to-depth grid (cell c holds the s
# inputs s c + r as channels), the kernel zero-padded to s ceil(k / s) taps. The models' 5x5 stride-2
# and 3x3 stride-1 convolutions both become 3-tap ones, computed here by F(4, 3) along each axis: per
# 4x4 outputs and output channel, 36 products over s^2 C channels, i.e. 144 C multiply-adds for the
# 5x5 stride-2 kernel against im2col's 400 C (2.8x fewer) and 36 C against 144 C for the 3x3 one (4x).
# The input gradient and the weight gradient are transposes of the same linear steps (transforms,
# products, transforms), so the three faces share the tiles and the transformed kernel.

TRAINING_TILE, TRAINING_TAPS = 4, 3
_TRAINING_A_T, _TRAINING_G, _TRAINING_B_T = winograd_matrices(TRAINING_TILE, TRAINING_TAPS)
_TRAINING_SPAN = TRAINING_TILE + TRAINING_TAPS - 1  # cells a tile reads


def fits(geometry) -> bool:
  """Whether :func:`correlate` and its transposes take this ``conv.Geometry``: ``ceil(k / s) == 3`` on both axes."""
  return all(-(-axis.kernel // axis.stride) == TRAINING_TAPS for axis in geometry.axes)


def _grid(geometry) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
  """Per axis: stride, tiles, and space-to-depth cells the tiles read (the last tile may overhang the output)."""
  if not fits(geometry):
    raise ValueError(f"the space-to-depth Winograd faces need ceil(kernel / stride) == {TRAINING_TAPS}, got {geometry}")
  out = []
  for axis in geometry.axes:
    tiles = -(-axis.low_size // TRAINING_TILE)
    out.append((axis.stride, tiles, TRAINING_TILE * tiles + TRAINING_TAPS - 1))
  return tuple(out)


def _space_to_depth(x: jax.Array, geometry) -> jax.Array:
  """x padded (zeros) to ``s`` times the cells, as ``(N, cells_h, cells_w, s_h s_w C)``."""
  (sh, _, ch), (sw, _, cw) = _grid(geometry)
  height, width = geometry.axes
  n, h, w, channels = x.shape
  padded = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (height.low_padding, sh * ch - height.low_padding - h, 0),
                                               (width.low_padding, sw * cw - width.low_padding - w, 0), (0, 0, 0)])
  return padded.reshape(n, ch, sh, cw, sw, channels).transpose(0, 1, 3, 2, 4, 5).reshape(n, ch, cw, -1)


def _depth_to_space(cells: jax.Array, geometry, channels: int) -> jax.Array:
  """The transpose of :func:`_space_to_depth`: cells back to pixels, the padding dropped."""
  (sh, _, _), (sw, _, _) = _grid(geometry)
  height, width = geometry.axes
  n, ch, cw, _ = cells.shape
  x = cells.reshape(n, ch, cw, sh, sw, channels).transpose(0, 1, 3, 2, 4, 5).reshape(n, ch * sh, cw * sw, channels)
  return lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (-height.low_padding, height.high_size + height.low_padding - ch * sh, 0),
                                             (-width.low_padding, width.high_size + width.low_padding - cw * sw, 0), (0, 0, 0)])


def _grid_kernel(kernel: jax.Array, geometry) -> jax.Array:
  """The transformed space-to-depth kernel: HWIO ``(k, k, C, D)`` -> ``(36, s_h s_w C, D)``, float32."""
  (sh, _, _), (sw, _, _) = _grid(geometry)
  kh, kw, channels, features = kernel.shape
  taps = TRAINING_TAPS
  padded = jnp.pad(kernel, [(0, sh * taps - kh), (0, sw * taps - kw), (0, 0), (0, 0)])
  grid = padded.reshape(taps, sh, taps, sw, channels, features).transpose(0, 2, 1, 3, 4, 5)
  return _kernel_transform(grid.reshape(taps, taps, sh * sw * channels, features), _TRAINING_G, _TRAINING_G)


def _grid_kernel_transpose(transformed: jax.Array, geometry, kernel_shape: tuple[int, ...]) -> jax.Array:
  """The transpose of :func:`_grid_kernel`: ``(36, s_h s_w C, D)`` -> HWIO ``(k, k, C, D)``."""
  (sh, _, _), (sw, _, _) = _grid(geometry)
  kh, kw, channels, features = kernel_shape
  taps = TRAINING_TAPS
  accumulate = jnp.promote_types(transformed.dtype, jnp.float32)
  grid = jnp.dot(np.kron(_TRAINING_G, _TRAINING_G).T.astype(accumulate),
                 transformed.reshape(_TRAINING_SPAN ** 2, -1).astype(accumulate), precision=lax.Precision.HIGHEST)
  padded = grid.reshape(taps, taps, sh, sw, channels, features).transpose(0, 2, 1, 3, 4, 5)
  return padded.reshape(taps * sh, taps * sw, channels, features)[:kh, :kw]


def _output_transform_transpose(y: jax.Array, tiles: tuple[int, int]) -> jax.Array:
  """The transpose of :func:`_output_transform`: ``(N, h, w, D)`` -> ``(36, N t_h t_w, D)`` (``A y A^T`` per tile)."""
  m, a_t = TRAINING_TILE, _TRAINING_A_T
  n, h, w, features = y.shape
  th, tw = tiles
  tiled = jnp.pad(y, [(0, 0), (0, m * th - h), (0, m * tw - w), (0, 0)]).reshape(n, th, m, tw, m, features)
  stacked = []
  for coefficients in a_t.T:
    part = _combine([tiled[:, :, i] for i in range(m)], coefficients)  # (N, t_h, t_w, m, D)
    stacked.append(jnp.stack([_combine([part[:, :, :, j] for j in range(m)], c) for c in a_t.T]))
  return jnp.stack(stacked).reshape(_TRAINING_SPAN ** 2, -1, features)


def _overlap_add(parts: Sequence[jax.Array], axis: int) -> jax.Array:
  """Tiles' contributions to cells: ``parts[r]`` (tile axis ``axis``) lands on cell ``m i + r``; tiles overlap by
  ``a - m <= m`` cells. Returns cells ``m (t + 1)`` long on that axis, phase by phase (no strided writes)."""
  m = TRAINING_TILE
  pad_after, pad_before = [(0, 0)] * parts[0].ndim, [(0, 0)] * parts[0].ndim
  pad_after[axis], pad_before[axis] = (0, 1), (1, 0)
  phases = []
  for phase in range(m):
    total = jnp.pad(parts[phase], pad_after)
    if phase + m < len(parts):
      total = total + jnp.pad(parts[phase + m], pad_before)
    phases.append(total)
  stacked = jnp.stack(phases, axis=axis + 1)
  shape = list(stacked.shape)
  shape[axis:axis + 2] = [shape[axis] * m]
  return stacked.reshape(shape)


def _input_transform_transpose(transformed: jax.Array, batch_and_tiles: tuple[int, int, int]) -> jax.Array:
  """The transpose of :func:`_input_transform`: ``(36, N t_h t_w, C)`` -> cells ``(N, 4 t_h + 4, 4 t_w + 4, C)``."""
  a, b_t = _TRAINING_SPAN, _TRAINING_B_T
  n, th, tw = batch_and_tiles
  v = transformed.reshape(a, a, n, th, tw, transformed.shape[-1])
  by_rows = [_overlap_add([_combine([v[k, l] for l in range(a)], b_t[:, r]) for r in range(a)], axis=2)
             for k in range(a)]
  return _overlap_add([_combine(by_rows, b_t[:, r]) for r in range(a)], axis=1)


def _transformed_input(x: jax.Array, geometry) -> jax.Array:
  (_, th, _), (_, tw, _) = _grid(geometry)
  return _input_transform(_space_to_depth(x, geometry), _TRAINING_B_T, _TRAINING_B_T, (TRAINING_TILE,) * 2, (th, tw))


def correlate(x: jax.Array, w: jax.Array, geometry) -> jax.Array:
  """``conv.correlate(x, w, geometry)``: the convolution, float32 (``x``'s dtype), by F(4, 3) on the grid."""
  (_, th, _), (_, tw, _) = _grid(geometry)
  products = lax.dot_general(_transformed_input(x, geometry), _grid_kernel(w, geometry).astype(x.dtype),
                             (((2,), (1,)), ((0,), (0,))))
  y = _output_transform(products, _TRAINING_A_T, _TRAINING_A_T, (TRAINING_TILE,) * 2, (x.shape[0], th, tw))
  return y[:, :geometry.height.low_size, :geometry.width.low_size]


def scatter(y: jax.Array, w: jax.Array, geometry) -> jax.Array:
  """``conv.scatter(y, w, geometry)``: the transposed convolution (input gradient), by F(4, 3) on the grid."""
  (_, th, _), (_, tw, _) = _grid(geometry)
  transformed_kernel = _grid_kernel(w, geometry).astype(y.dtype)
  products = lax.dot_general(_output_transform_transpose(y, (th, tw)), transformed_kernel,
                             (((2,), (2,)), ((0,), (0,))))  # (36, N t_h t_w, s^2 C)
  cells = _input_transform_transpose(products, (y.shape[0], th, tw))
  return _depth_to_space(cells, geometry, w.shape[2])


def weight(x: jax.Array, y: jax.Array, geometry) -> jax.Array:
  """``conv.weight(x, y, geometry)``: the weight gradient, by F(4, 3) on the grid."""
  (_, th, _), (_, tw, _) = _grid(geometry)
  y_transformed = _output_transform_transpose(y, (th, tw))  # (36, N t_h t_w, D)
  # XLA folds both transposes into the batched product. Unlike conv's unbatched weight gradient, this is the faster
  # form: making this product and scatter's row-major with barriers made the 64x64 steps 0.85-0.94x as fast.
  products = lax.dot_general(y_transformed.transpose(0, 2, 1), _transformed_input(x, geometry),
                             (((2,), (1,)), ((0,), (0,))))  # (36, D, s^2 C)
  kernel_shape = (geometry.height.kernel, geometry.width.kernel, x.shape[-1], y.shape[-1])
  return _grid_kernel_transpose(products.transpose(0, 2, 1), geometry, kernel_shape).astype(x.dtype)
