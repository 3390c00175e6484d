"""Improved precision and recall of a generative model (k-nearest-neighbour manifolds).

Each set of features approximates its manifold by the union of hyperspheres around its points, of
radius the distance to the point's ``k``-th nearest neighbour in the same set (itself excluded).

  ``precision = (1/|G|) sum_{g in G} 1[exists r in R: |g - r| <= rad_R(r)]``
  ``recall    = (1/|R|) sum_{r in R} 1[exists g in G: |r - g| <= rad_G(g)]``

with ``R`` the real and ``G`` the generated features, ``k = 3`` by default.

References:
  Kynkäänniemi, Karras, Laine, Lehtinen & Aila, "Improved Precision and Recall Metric for Assessing
    Generative Models", NeurIPS 2019.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pairwise_distances", "knn_radii", "manifold_coverage", "precision_recall"]


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Euclidean distances ``D[i, j] = |a_i - b_j|`` in float64 (clipped at 0 before the root)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
  return np.sqrt(np.maximum(sq, 0.0))


def knn_radii(features: np.ndarray, *, k: int = 3, batch_size: int = 2048) -> np.ndarray:
  """Distance of each feature to its ``k``-th nearest other feature of the same set.

  Raises:
    ValueError: where the set has ``k`` or fewer points, or ``k < 1``.
  """
  f = np.asarray(features, np.float64)
  if k < 1 or f.ndim != 2 or len(f) <= k:
    raise ValueError(f"knn_radii needs k >= 1 and more than k points (N, D), got k={k}, {f.shape}")
  radii = np.empty(len(f))
  for start in range(0, len(f), batch_size):
    d = pairwise_distances(f[start:start + batch_size], f)
    # Index k of the sorted row: index 0 is the point itself (distance 0).
    radii[start:start + batch_size] = np.partition(d, k, axis=1)[:, k]
  return radii


def manifold_coverage(queries: np.ndarray, manifold: np.ndarray, radii: np.ndarray, *,
                      batch_size: int = 2048) -> float:
  """Fraction of ``queries`` inside some hypersphere ``|q - m_i| <= radii_i`` of the manifold."""
  q, m = np.asarray(queries, np.float64), np.asarray(manifold, np.float64)
  inside = np.empty(len(q), bool)
  for start in range(0, len(q), batch_size):
    d = pairwise_distances(q[start:start + batch_size], m)
    inside[start:start + batch_size] = (d <= radii[None, :]).any(axis=1)
  return float(inside.mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, *, k: int = 3) -> dict[str, float]:
  """Improved precision and recall of ``fake`` features against ``real`` ones (module docstring).

  Raises:
    ValueError: on mismatched feature dimensions or sets of ``k`` or fewer points.
  """
  real, fake = np.asarray(real), np.asarray(fake)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise ValueError(f"precision_recall needs (N, D) and (M, D) features, got {real.shape}, {fake.shape}")
  precision = manifold_coverage(fake, real, knn_radii(real, k=k))
  recall = manifold_coverage(real, fake, knn_radii(fake, k=k))
  return {"precision": precision, "recall": recall, "k": k}
