"""How steep a critic is where a gradient penalty looks: summaries of per-example input-gradient norms.

The paper's penalty (``losses.gradient_penalty``) constrains each example's ``||grad_x D(x_hat_i)||_2`` to 1. The
TF2 tutorial's constrains one norm per batch, the norm of the whole batch's gradient, ``sqrt(sum_i norm_i^2)``: a
critic meets it with norms whose root mean square is ``1 / sqrt(batch_size)``, spread in any way. ``slope_statistics``
reads both from the per-example norms.
"""

from __future__ import annotations

import numpy as np

__all__ = ["slope_statistics"]


def slope_statistics(norms: np.ndarray, *, batch_size: int) -> dict:
  """Summary of per-example input-gradient norms ``(N,)``: their distribution, the whole-batch norms of the
  ``N // batch_size`` consecutive batches of ``batch_size`` (``sqrt(sum_i norm_i^2)``: the norm of the whole batch's
  gradient), the paper's penalty ``mean_i (norm_i - 1)^2`` and the tutorial's ``mean_batches (norm_batch - 1)^2``,
  both without the weight.

  Raises:
    ValueError: unless ``norms`` is one-dimensional and holds at least one batch.
  """
  norms = np.asarray(norms, np.float64)
  if norms.ndim != 1 or not 1 <= batch_size <= norms.size:
    raise ValueError(f"norms of shape {norms.shape} do not hold one batch of batch_size={batch_size}")
  num_batches = norms.size // batch_size
  whole_batch = np.sqrt(np.sum(np.square(norms[:num_batches * batch_size]).reshape(num_batches, batch_size), axis=1))
  p10, p50, p90 = np.percentile(norms, [10, 50, 90])
  return {
      "num": int(norms.size), "batch_size": batch_size,
      "per_example": {"mean": float(norms.mean()), "std": float(norms.std()),
                      "root_mean_square": float(np.sqrt(np.mean(np.square(norms)))), "p10": float(p10),
                      "p50": float(p50), "p90": float(p90), "min": float(norms.min()), "max": float(norms.max())},
      "whole_batch_norms": whole_batch.tolist(),
      "per_example_penalty": float(np.mean(np.square(norms - 1.0))),
      "whole_batch_penalty": float(np.mean(np.square(whole_batch - 1.0))),
  }
