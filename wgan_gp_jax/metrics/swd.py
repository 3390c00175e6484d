"""Sliced Wasserstein distance between Laplacian-pyramid patches of two image sets (no weights).

For each level of a Laplacian pyramid (the full resolution down to 16x16), ``descriptors_per_image``
random 7x7 neighbourhoods are cut from every image; each set's descriptors are normalized per channel
(mean 0, std 1 over that set's descriptors and pixels) and flattened. The sliced Wasserstein-1
distance of two equal-size descriptor sets ``A``, ``B`` along random unit directions ``u``:

  ``SWD(A, B) = E_u (1/M) sum_i |sort(A u)_i - sort(B u)_i|``

estimated with ``num_repeats`` x ``directions_per_repeat`` directions. Values are reported x 1e3 per
pyramid level (keyed by resolution) and averaged over levels, as in Karras et al.

References:
  Karras, Aila, Laine & Lehtinen, "Progressive Growing of GANs for Improved Quality, Stability, and
    Variation", ICLR 2018, section 5 and appendix D.
  Rabin, Peyré, Delon & Bernot, "Wasserstein Barycenter and its Application to Texture Mixing",
    SSVM 2011 (sliced Wasserstein distance).
  Burt & Adelson, "The Laplacian Pyramid as a Compact Image Code", IEEE Trans. Commun. 31(4), 1983.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage

__all__ = ["laplacian_pyramid", "patch_descriptors", "sliced_wasserstein", "sliced_wasserstein_distance"]

_GAUSS_5 = np.array([1.0, 4.0, 6.0, 4.0, 1.0], np.float32) / 16.0
_MIN_RESOLUTION = 16
_PATCH = 7


def _blur(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """Separable filter over the H and W axes of ``(N, H, W, C)``, mirrored at the borders."""
  x = scipy.ndimage.convolve1d(x, kernel, axis=1, mode="mirror")
  return scipy.ndimage.convolve1d(x, kernel, axis=2, mode="mirror")


def _pyr_down(x: np.ndarray) -> np.ndarray:
  return _blur(x, _GAUSS_5)[:, ::2, ::2]


def _pyr_up(x: np.ndarray) -> np.ndarray:
  n, h, w, c = x.shape
  up = np.zeros((n, 2 * h, 2 * w, c), x.dtype)
  up[:, ::2, ::2] = x
  return _blur(up, 2.0 * _GAUSS_5)


def laplacian_pyramid(images: np.ndarray, *, num_levels: int) -> list[np.ndarray]:
  """Laplacian pyramid of ``(N, H, W, C)`` images, finest level first (the last is Gaussian).

  Level ``i < L - 1`` is ``G_i - up(G_{i+1})`` with ``G_{i+1} = down(blur(G_i))``; level ``L - 1``
  is ``G_{L-1}``. Blur is the 5-tap binomial ``[1, 4, 6, 4, 1] / 16``.

  Raises:
    ValueError: where the image size is not divisible by ``2^(num_levels - 1)``.
  """
  x = np.asarray(images, np.float32)
  factor = 2 ** (num_levels - 1)
  if x.ndim != 4 or x.shape[1] % factor or x.shape[2] % factor:
    raise ValueError(f"images (N, H, W, C) must have H, W divisible by {factor}, got {x.shape}")
  levels = []
  for _ in range(num_levels - 1):
    down = _pyr_down(x)
    levels.append(x - _pyr_up(down))
    x = down
  levels.append(x)
  return levels


def patch_descriptors(level: np.ndarray, *, descriptors_per_image: int,
                      rng: np.random.Generator) -> np.ndarray:
  """Random 7x7 neighbourhoods of one pyramid level, normalized per channel and flattened.

  Returns ``(N * descriptors_per_image, 49 C)`` float32.
  """
  n, h, w, c = level.shape
  if h < _PATCH or w < _PATCH:
    raise ValueError(f"pyramid level {h}x{w} is smaller than the {_PATCH}x{_PATCH} patch")
  img = np.repeat(np.arange(n), descriptors_per_image)
  ys = rng.integers(0, h - _PATCH + 1, size=img.shape)
  xs = rng.integers(0, w - _PATCH + 1, size=img.shape)
  offsets = np.arange(_PATCH)
  patches = level[img[:, None, None], ys[:, None, None] + offsets[None, :, None],
                  xs[:, None, None] + offsets[None, None, :]]  # (M, 7, 7, C)
  patches = patches - patches.mean(axis=(0, 1, 2))
  patches = patches / np.maximum(patches.std(axis=(0, 1, 2)), 1e-8)
  return patches.reshape(len(img), -1).astype(np.float32)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, *, num_repeats: int = 4,
                       directions_per_repeat: int = 128, rng: np.random.Generator) -> float:
  """Sliced Wasserstein-1 distance between two equal-size point sets ``(M, D)`` (module docstring).

  Raises:
    ValueError: where the sets differ in shape.
  """
  if a.shape != b.shape or a.ndim != 2:
    raise ValueError(f"sliced_wasserstein needs two (M, D) sets of equal shape, got {a.shape}, {b.shape}")
  estimates = []
  for _ in range(num_repeats):
    dirs = rng.standard_normal((a.shape[1], directions_per_repeat)).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    proj_a = np.sort(dirs.T @ a.T, axis=1)  # (directions, M), contiguous rows sort fast.
    proj_b = np.sort(dirs.T @ b.T, axis=1)
    estimates.append(np.abs(proj_a - proj_b).mean(dtype=np.float64))
  return float(np.mean(estimates))


def sliced_wasserstein_distance(images1: np.ndarray, images2: np.ndarray, *,
                                descriptors_per_image: int = 128, num_repeats: int = 4,
                                directions_per_repeat: int = 128, seed: int = 0) -> dict:
  """SWD x 1e3 between two equal-size image sets on Laplacian-pyramid patches (Karras et al. 2018).

  Args:
    images1, images2: ``(N, H, W, C)`` images (uint8 or float, any common scale), same shape.
    descriptors_per_image: 7x7 patches drawn per image and level.
    num_repeats, directions_per_repeat: random projections (``num_repeats`` batches).
    seed: seed of the patch positions and projections.

  Returns:
    ``{"swd": mean over levels, "swd_levels": {resolution: value}}``, all x 1e3.

  Raises:
    ValueError: on different shapes, or images smaller than 7x7.
  """
  x1, x2 = np.asarray(images1), np.asarray(images2)
  if x1.shape != x2.shape or x1.ndim != 4:
    raise ValueError(f"SWD needs two (N, H, W, C) image sets of equal shape, got {x1.shape}, {x2.shape}")
  h, w = x1.shape[1:3]
  num_levels = 1  # Halve while both sides stay >= 16 and even.
  while all(s % 2 ** num_levels == 0 and s // 2 ** num_levels >= _MIN_RESOLUTION for s in (h, w)):
    num_levels += 1
  rng = np.random.default_rng(seed)
  pyr1 = laplacian_pyramid(x1, num_levels=num_levels)
  pyr2 = laplacian_pyramid(x2, num_levels=num_levels)
  per_level = {}
  for l1, l2 in zip(pyr1, pyr2):
    d1 = patch_descriptors(l1, descriptors_per_image=descriptors_per_image, rng=rng)
    d2 = patch_descriptors(l2, descriptors_per_image=descriptors_per_image, rng=rng)
    per_level[int(l1.shape[1])] = 1e3 * sliced_wasserstein(
      d1, d2, num_repeats=num_repeats, directions_per_repeat=directions_per_repeat, rng=rng)
  return {"swd": float(np.mean(list(per_level.values()))), "swd_levels": per_level}
