r"""Stride-1 convolutions by Winograd's minimal filtering, for inference on XLA:CPU.

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
Forward only: nothing here defines derivatives beyond what JAX traces through
(it is linear, so they exist, but nobody has made them fast).

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

__all__ = ["DEFAULT_TILE", "winograd_matrices", "conv2d"]

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

  # Input transform B^T d B: tile (i, j) reads rows m_h i + (0..a_h-1) and columns m_w j + (0..a_w-1).
  rows = [padded[:, r:r + mh * (th - 1) + 1:mh] for r in range(ah)]
  by_rows = [_combine(rows, b_t_h[k]) for k in range(ah)]
  transformed = []
  for part in by_rows:
    cols = [part[:, :, s:s + mw * (tw - 1) + 1:mw] for s in range(aw)]
    transformed += [_combine(cols, b_t_w[l]) for l in range(aw)]
  v = jnp.stack(transformed).reshape(ah * aw, n * th * tw, channels)

  accumulate = jnp.promote_types(x.dtype, jnp.float32)  # bfloat16 inputs sum in float32
  # G g G^T for every (in, out) channel pair as one product with the Kronecker matrix: an einsum over
  # the three factors becomes a batch of tiny products that XLA:CPU runs 10-100x slower.
  u = jnp.dot(np.kron(g_h, g_w).astype(accumulate), kernel.reshape(kh * kw, channels * features).astype(accumulate),
              precision=lax.Precision.HIGHEST).astype(x.dtype).reshape(ah * aw, channels, features)
  products = lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,))), preferred_element_type=accumulate)
  products = products.astype(x.dtype).reshape(ah, aw, n, th, tw, features)

  # Output transform A^T M A, then the (m_h, m_w) outputs of each tile interleave into the image.
  by_rows = [_combine([products[k] for k in range(ah)], a_t_h[i]) for i in range(mh)]
  out = [jnp.stack([_combine([part[l] for l in range(aw)], a_t_w[j]) for j in range(mw)], axis=3) for part in by_rows]
  out = jnp.stack(out, axis=2).reshape(n, mh * th, mw * tw, features)
  return out[:, :out_h, :out_w]
