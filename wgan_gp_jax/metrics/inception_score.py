"""Inception Score from the FID Inception's 1008-way logits.

``IS = exp(E_x KL(p(y|x) || p(y)))`` with ``p(y|x) = softmax(logits(x))`` and ``p(y)`` the mean of
``p(y|x)`` over the split; computed on ``num_splits`` equal splits and reported as mean and std, as
the original code (softmax over all 1008 outputs of the 2015-12-05 graph).

References:
  Salimans et al., "Improved Techniques for Training GANs", NeurIPS 2016.
  Barratt & Sharma, "A Note on the Inception Score", 2018.
"""

from __future__ import annotations

import numpy as np
import scipy.special

__all__ = ["inception_score"]


def inception_score(logits: np.ndarray, *, num_splits: int = 10) -> dict[str, float]:
  """Inception Score of ``(N, C)`` logits: ``{"is": mean over splits, "is_std": std}``.

  Raises:
    ValueError: on a non-2-D input or fewer samples than splits.
  """
  logits = np.asarray(logits, np.float64)
  if logits.ndim != 2 or num_splits < 1 or len(logits) < num_splits:
    raise ValueError(f"inception_score needs (N >= num_splits, C) logits, got {logits.shape}, "
                     f"num_splits={num_splits}")
  log_p = scipy.special.log_softmax(logits, axis=1)
  scores = []
  for part in np.array_split(log_p, num_splits):
    log_marginal = scipy.special.logsumexp(part, axis=0) - np.log(len(part))
    kl = (np.exp(part) * (part - log_marginal[None, :])).sum(axis=1)
    scores.append(np.exp(kl.mean()))
  return {"is": float(np.mean(scores)), "is_std": float(np.std(scores))}
