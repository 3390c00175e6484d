"""Fréchet Inception Distance: Gaussian statistics of features and the Fréchet distance between them.

``FID = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^{1/2})``, with the means and the
(unbiased, ``N - 1``) covariances of the pool3 features in float64. The matrix square root is the
principal square root of the (generally non-symmetric) product ``S_1 S_2`` by the blocked Schur
method, as ``scipy.linalg.sqrtm`` in pytorch-fid; the result is handled the same way: where it is
not finite, ``eps I`` is added to both covariances and it is recomputed; imaginary parts on its
diagonal larger than 1e-3 are an error, smaller ones are dropped.

References:
  Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
    Equilibrium", NeurIPS 2017.
  Dowson & Landau, "The Fréchet distance between multivariate normal distributions", J.
    Multivariate Anal. 12(3), 1982.
  Deadman, Higham & Ralha, "Blocked Schur Algorithms for Computing the Matrix Square Root", PARA
    2012, LNCS 7782.
  Björck & Hammarling, "A Schur method for the square root of a matrix", Linear Algebra Appl. 52/53,
    1983.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

__all__ = ["gaussian_statistics", "sqrtm", "frechet_distance", "fid_from_features"]


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and unbiased covariance of ``(N, D)`` features, in float64.

  ``mu = (1/N) sum_i f_i``, ``S = 1/(N - 1) sum_i (f_i - mu)(f_i - mu)^T``.

  Raises:
    ValueError: where ``features`` is not 2-D with at least two rows, or is not finite.
  """
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise ValueError(f"features must be (N >= 2, D), got shape {f.shape}")
  if not np.isfinite(f).all():
    raise ValueError("features contain NaN or infinite values")
  mu = f.mean(axis=0)
  centred = f - mu
  return mu, centred.T @ centred / (f.shape[0] - 1)


def _sqrtm_triu_small(t: np.ndarray) -> np.ndarray:
  """Square root of a small upper-triangular ``T``, one column at a time.

  ``R^2 = T`` column ``j`` reads ``(R[:j, :j] + R[j, j] I) R[:j, j] = T[:j, j]``: an upper-triangular
  solve once the columns before it are known (Björck & Hammarling 1983).
  """
  n = t.shape[0]
  r = np.zeros_like(t)
  d = np.sqrt(np.diag(t))
  r[np.diag_indices(n)] = d
  for j in range(1, n):
    a = r[:j, :j] + d[j] * np.eye(j)
    if np.any(np.diag(a) == 0):  # Singular T: leave non-finite values for the caller to see.
      r[:j, j] = np.nan
      continue
    r[:j, j] = scipy.linalg.solve_triangular(a, t[:j, j], check_finite=False)
  return r


def _sqrtm_triu(t: np.ndarray, block_size: int) -> np.ndarray:
  """Square root of an upper-triangular ``T`` by recursive 2x2 blocking.

  With ``T = [[T11, T12], [0, T22]]``: ``R11 = sqrt(T11)``, ``R22 = sqrt(T22)`` and ``R12`` solves
  the triangular Sylvester equation ``R11 R12 + R12 R22 = T12`` (LAPACK ``ztrsyl``).
  """
  n = t.shape[0]
  if n <= block_size:
    return _sqrtm_triu_small(t)
  h = n // 2
  r11 = _sqrtm_triu(t[:h, :h], block_size)
  r22 = _sqrtm_triu(t[h:, h:], block_size)
  r = np.zeros_like(t)
  r[:h, :h], r[h:, h:] = r11, r22
  if not (np.isfinite(r11).all() and np.isfinite(r22).all()):
    r[:h, h:] = np.nan
    return r
  (trsyl,) = scipy.linalg.get_lapack_funcs(("trsyl",), (r11, r22, t))
  x, scale, info = trsyl(r11, r22, t[:h, h:])
  if info < 0:
    raise RuntimeError(f"LAPACK trsyl: illegal argument {-info}")
  r[:h, h:] = x / scale
  return r


def sqrtm(a: np.ndarray, *, block_size: int = 64) -> np.ndarray:
  """Principal square root of a square matrix, in complex128 (``X @ X = A``).

  Blocked Schur method: ``A = Z T Z^H`` with ``T`` upper triangular (the real Schur form where
  every eigenvalue is real, as for a product of covariances, else the complex one), ``X = Z sqrt(T)
  Z^H`` with the triangular square root computed by :func:`_sqrtm_triu`. Where ``A`` is singular the result has
  NaN entries.

  Args:
    a: ``(n, n)`` real or complex matrix.
    block_size: size below which triangular blocks are solved column by column.

  Raises:
    ValueError: where ``a`` is not a finite square matrix.
  """
  a = np.asarray(a)
  if a.ndim != 2 or a.shape[0] != a.shape[1]:
    raise ValueError(f"sqrtm needs a square matrix, got shape {a.shape}")
  if not np.isfinite(a).all():
    raise ValueError("sqrtm input contains NaN or infinite values")
  if np.iscomplexobj(a):
    t, z = scipy.linalg.schur(a.astype(np.complex128), output="complex")
  else:
    t, z = scipy.linalg.schur(a.astype(np.float64), output="real")
    if np.any(np.diag(t, -1) != 0):  # 2x2 blocks of complex eigenvalue pairs.
      t, z = scipy.linalg.rsf2csf(t, z)
  r = _sqrtm_triu(t.astype(np.complex128), block_size)
  return z @ r @ z.conj().T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *,
                     eps: float = 1e-6) -> float:
  """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (FID on pool3 statistics).

  ``d^2 = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^{1/2})``.

  Args:
    mu1, mu2: ``(D,)`` means.
    sigma1, sigma2: ``(D, D)`` covariances.
    eps: added to both diagonals where the square root of the product is not finite.

  Raises:
    ValueError: on mismatched shapes, or where the square root has a diagonal imaginary part above
      1e-3 (the covariances are then far from positive semi-definite).
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  d = mu1.shape[0]
  if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise ValueError(f"mismatched statistics: mu1 {mu1.shape}, sigma1 {sigma1.shape}, "
                     f"mu2 {mu2.shape}, sigma2 {sigma2.shape}")
  diff = mu1 - mu2
  covmean = sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    offset = eps * np.eye(d)
    covmean = sqrtm((sigma1 + offset) @ (sigma2 + offset))
  imaginary = np.abs(np.diagonal(covmean).imag).max()
  if imaginary > 1e-3:
    raise ValueError(f"matrix square root has an imaginary diagonal part of {imaginary:.3g} > 1e-3")
  tr_covmean = np.trace(covmean.real)
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
  """FID between two ``(N, D)`` feature sets: :func:`frechet_distance` of their statistics."""
  return frechet_distance(*gaussian_statistics(features1), *gaussian_statistics(features2))
