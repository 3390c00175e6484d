"""Quality metrics for the 2-D toy mixtures: mode coverage, sample quality and exact W1.

For a mixture of isotropic Gaussians with centres ``c_k`` and std ``sigma``:

* a sample is *high quality* when its nearest centre is within ``num_std * sigma`` (3 by default);
* a mode is *covered* when at least ``min_count`` high-quality samples are assigned to it;
* ``exact_w1`` is the Wasserstein-1 distance between two equal-size empirical sets, solved exactly as
  an assignment problem: ``W1 = min_perm (1/n) sum_i |a_i - b_perm(i)|``.

(The 8- and 25-Gaussian mixtures of Gulrajani et al. are in :mod:`wgan_gp_jax.toy_data`.)

References:
  Srivastava et al., "VEEGAN: Reducing Mode Collapse in GANs using Implicit Variational Learning",
    NeurIPS 2017 (modes covered and high-quality samples at 3 standard deviations).
  Gulrajani et al., "Improved Training of Wasserstein GANs", NeurIPS 2017 (the toy mixtures).
  Villani, "Optimal Transport: Old and New", 2009 (W1 of empirical measures as an assignment).
"""

from __future__ import annotations

import numpy as np
import scipy.optimize
import scipy.spatial

__all__ = ["mode_coverage", "exact_w1", "toy_metrics"]


def _points(x: np.ndarray, name: str) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or x.shape[0] == 0:
    raise ValueError(f"{name} must be a non-empty (N, D) array, got shape {x.shape}")
  if not np.isfinite(x).all():
    raise ValueError(f"{name} contains NaN or infinite values")
  return x


def mode_coverage(samples: np.ndarray, centres: np.ndarray, std: float, *, num_std: float = 3.0,
                  min_count: int = 1) -> dict:
  """Modes covered and high-quality fraction of ``samples`` under a Gaussian mixture.

  Args:
    samples: ``(N, D)`` generated points.
    centres: ``(K, D)`` mixture centres.
    std: the std of every component.
    num_std: a sample is high quality within ``num_std * std`` of its nearest centre.
    min_count: high-quality samples a mode needs to count as covered.

  Returns:
    ``{"modes_covered": int, "num_modes": K, "high_quality_fraction": float,
    "mode_counts": [high-quality samples per mode]}``.

  Raises:
    ValueError: on bad shapes, a non-positive ``std`` or ``min_count < 1``.
  """
  samples, centres = _points(samples, "samples"), _points(centres, "centres")
  if samples.shape[1] != centres.shape[1]:
    raise ValueError(f"samples {samples.shape} and centres {centres.shape} differ in dimension")
  if not std > 0 or min_count < 1:
    raise ValueError(f"need std > 0 and min_count >= 1, got std={std}, min_count={min_count}")
  dist = scipy.spatial.distance.cdist(samples, centres)
  nearest = dist.argmin(axis=1)
  good = dist[np.arange(len(samples)), nearest] <= num_std * std
  counts = np.bincount(nearest[good], minlength=len(centres))
  return {"modes_covered": int((counts >= min_count).sum()), "num_modes": len(centres),
          "high_quality_fraction": float(good.mean()), "mode_counts": counts.tolist()}


def exact_w1(samples_a: np.ndarray, samples_b: np.ndarray) -> float:
  """Exact Wasserstein-1 distance between two equal-size point sets (Euclidean ground cost).

  ``W1 = min over permutations p of (1/n) sum_i |a_i - b_p(i)|``, by the Hungarian algorithm
  (``scipy.optimize.linear_sum_assignment``); O(n^3), meant for a few thousand points.

  Raises:
    ValueError: where the sets differ in shape.
  """
  a, b = _points(samples_a, "samples_a"), _points(samples_b, "samples_b")
  if a.shape != b.shape:
    raise ValueError(f"exact_w1 needs equal-size sets, got {a.shape} and {b.shape}")
  cost = scipy.spatial.distance.cdist(a, b)
  rows, cols = scipy.optimize.linear_sum_assignment(cost)
  return float(cost[rows, cols].mean())


def toy_metrics(samples: np.ndarray, real: np.ndarray, *, centres: np.ndarray | None = None,
                std: float | None = None) -> dict:
  """The cheap toy metrics in one dict: ``w1`` to ``real`` (same size), plus coverage for mixtures.

  ``centres`` and ``std`` are those of the mixture (``None`` for e.g. the Swiss roll, which has no
  modes).
  """
  out: dict = {"w1": exact_w1(samples, real)}
  if centres is not None:
    if std is None:
      raise ValueError("toy_metrics got centres without their std")
    out.update(mode_coverage(samples, centres, std))
  return out
