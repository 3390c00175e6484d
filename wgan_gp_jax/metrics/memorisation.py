"""Does a generator copy its training images? Nearest training neighbours in Inception feature space.

A generator that memorised its training set makes samples much nearer to some training image than new real images
are. :func:`memorisation_report` measures each sample's distance to its nearest training image and sets it against the
same distance for held-out real images (images of the same distribution that training never saw): where the samples'
distances are no smaller than the held-out images', the samples are no nearer copies of training images than new
faces are.

References:
  Borji, "Pros and cons of GAN evaluation measures", 2019 (nearest-neighbour memorisation checks).
  Gulrajani, Raffel and Metz, "Towards GAN benchmarks which require generalization", 2019.
"""

from __future__ import annotations

import numpy as np

__all__ = ["nearest_neighbours", "memorisation_report"]

QUANTILES = (0.0, 0.01, 0.05, 0.5)


def nearest_neighbours(queries: np.ndarray, references: np.ndarray, *,
                       batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
  """Euclidean distance from each row of ``queries`` ``(N, D)`` to its nearest row of ``references`` ``(M, D)``, and
  that row's index: ``(distances (N,), indices (N,))``.

  Raises:
    ValueError: where the arrays are not 2-D with the same ``D``, or ``references`` is empty.
  """
  queries, references = np.asarray(queries, np.float64), np.asarray(references, np.float64)
  if queries.ndim != 2 or references.ndim != 2 or queries.shape[1] != references.shape[1]:
    raise ValueError(f"nearest_neighbours needs (N, D) and (M, D) features, got {queries.shape} and"
                     f" {references.shape}")
  if len(references) == 0:
    raise ValueError("nearest_neighbours needs at least one reference row")
  reference_norms = np.sum(references**2, axis=1)
  distances, indices = np.empty(len(queries)), np.empty(len(queries), np.int64)
  for start in range(0, len(queries), batch_size):
    block = queries[start:start + batch_size]
    squared = np.sum(block**2, axis=1)[:, None] - 2.0 * block @ references.T + reference_norms[None, :]
    nearest = np.argmin(squared, axis=1)
    indices[start:start + len(block)] = nearest
    distances[start:start + len(block)] = np.sqrt(np.maximum(squared[np.arange(len(block)), nearest], 0.0))
  return distances, indices


def memorisation_report(sample_features: np.ndarray, training_features: np.ndarray,
                        held_out_features: np.ndarray, *, num_pairs: int = 16) -> dict:
  """Each sample's and each held-out image's distance to its nearest training image, compared.

  Returns a JSON-ready dict: ``sample_distance`` and ``held_out_distance`` (the distances' quantiles
  ``QUANTILES``, keyed ``min``, ``q01``, ``q05``, ``median``); ``samples_below_held_out_q01``: the fraction of samples
  nearer to a training image than 99% of the held-out images are (about 0.01 for a generator that copies nothing;
  near 1 for one that copies); ``closest_samples`` and ``closest_held_out``: the ``num_pairs`` nearest pairs,
  ``{"index", "training_index", "distance"}`` each, nearest first.
  """
  sample_distances, sample_nearest = nearest_neighbours(sample_features, training_features)
  held_distances, held_nearest = nearest_neighbours(held_out_features, training_features)

  def quantiles(distances):
    values = np.quantile(distances, QUANTILES)
    return dict(zip(("min", "q01", "q05", "median"), (float(v) for v in values)))

  def closest(distances, nearest):
    order = np.argsort(distances, kind="stable")[:num_pairs]
    return [{"index": int(i), "training_index": int(nearest[i]), "distance": float(distances[i])} for i in order]

  threshold = np.quantile(held_distances, 0.01)
  return {"sample_distance": quantiles(sample_distances), "held_out_distance": quantiles(held_distances),
          "samples_below_held_out_q01": float(np.mean(sample_distances < threshold)),
          "num_samples": int(len(sample_distances)), "num_training": int(len(training_features)),
          "num_held_out": int(len(held_distances)),
          "closest_samples": closest(sample_distances, sample_nearest),
          "closest_held_out": closest(held_distances, held_nearest)}
