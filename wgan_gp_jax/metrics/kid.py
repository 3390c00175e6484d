"""Kernel Inception Distance: unbiased MMD^2 with a cubic polynomial kernel, averaged over subsets.

``k(x, y) = (x . y / d + 1)^3`` on ``d``-dimensional features. For ``m`` features ``x`` and ``m``
features ``y`` the unbiased estimator is

  ``MMD^2 = 1/(m(m-1)) sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)] - 2/m^2 sum_{i,j} k(x_i, y_j)``,

whose expectation is exactly the squared MMD (zero for equal distributions, so it can be negative).
As Binkowski et al., it is computed on ``num_subsets`` random subsets of ``subset_size`` features of
each set (drawn without replacement within a subset) and reported as the mean and standard deviation.

References:
  Binkowski, Sutherland, Arbel & Gretton, "Demystifying MMD GANs", ICLR 2018.
  Gretton et al., "A Kernel Two-Sample Test", JMLR 13, 2012 (unbiased MMD^2_u, eq. 3).
"""

from __future__ import annotations

import numpy as np

__all__ = ["polynomial_kernel", "mmd2_unbiased", "kernel_inception_distance"]


def polynomial_kernel(x: np.ndarray, y: np.ndarray, *, degree: int = 3, gamma: float | None = None,
                      coef0: float = 1.0) -> np.ndarray:
  """``K[i, j] = (gamma x_i . y_j + coef0)^degree``, ``gamma = 1/d`` by default, in float64."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
    raise ValueError(f"kernel needs (N, D) and (M, D) features, got {x.shape} and {y.shape}")
  gamma = 1.0 / x.shape[1] if gamma is None else gamma
  return (gamma * (x @ y.T) + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, *, degree: int = 3, gamma: float | None = None,
                  coef0: float = 1.0) -> float:
  """Unbiased MMD^2 (Gretton et al. 2012) between ``(m, D)`` ``x`` and ``(m, D)`` ``y``.

  Raises:
    ValueError: where the sets differ in size or have fewer than two rows.
  """
  if len(x) != len(y) or len(x) < 2:
    raise ValueError(f"mmd2_unbiased needs two sets of equal size >= 2, got {len(x)} and {len(y)}")
  m = len(x)
  kw = dict(degree=degree, gamma=gamma, coef0=coef0)
  k_xx, k_yy, k_xy = polynomial_kernel(x, x, **kw), polynomial_kernel(y, y, **kw), polynomial_kernel(x, y, **kw)
  within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
  return float(within - 2.0 * k_xy.sum() / m**2)


def kernel_inception_distance(features1: np.ndarray, features2: np.ndarray, *, num_subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> dict[str, float]:
  """KID between two ``(N, D)`` feature sets: mean and std of MMD^2 over random subsets.

  Args:
    features1, features2: features of the two sets (sizes may differ).
    num_subsets: number of subset pairs.
    subset_size: features per subset; clipped to the smaller set's size.
    seed: seed of the subset draws.

  Returns:
    ``{"kid": mean, "kid_std": std over subsets, "subset_size": m, "num_subsets": n}``.

  Raises:
    ValueError: on bad shapes, fewer than two features, or a non-positive subset count/size.
  """
  f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
  if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
    raise ValueError(f"KID needs (N, D) and (M, D) features, got {f1.shape} and {f2.shape}")
  if num_subsets < 1 or subset_size < 2:
    raise ValueError(f"need num_subsets >= 1 and subset_size >= 2, got {num_subsets}, {subset_size}")
  m = min(subset_size, len(f1), len(f2))
  if m < 2:
    raise ValueError(f"KID needs at least two features per set, got {len(f1)} and {len(f2)}")
  rng = np.random.default_rng(seed)
  values = np.array([
    mmd2_unbiased(f1[rng.choice(len(f1), m, replace=False)], f2[rng.choice(len(f2), m, replace=False)])
    for _ in range(num_subsets)])
  return {"kid": float(values.mean()), "kid_std": float(values.std()), "subset_size": m,
          "num_subsets": num_subsets}
