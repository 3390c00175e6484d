"""Do a class-conditional generator's samples show the class they were asked for? A classifier that did not train the
GAN (k nearest neighbours in pixel space, fitted on real images the GAN never saw) labels them.

References:
  Odena, Olah and Shlens, "Conditional image synthesis with auxiliary classifier GANs", 2017 (samples' class
  accuracy under an independent classifier).
"""

from __future__ import annotations

import numpy as np

__all__ = ["knn_predict", "knn_accuracy"]


def knn_predict(images: np.ndarray, reference_images: np.ndarray, reference_labels: np.ndarray, *,
                k: int = 3) -> np.ndarray:
  """The majority label (ties to the nearest) of each image's ``k`` nearest reference images in pixel space (images
  of equal shape, any dtype)."""
  if images.shape[1:] != reference_images.shape[1:]:
    raise ValueError(f"images {images.shape[1:]} and reference images {reference_images.shape[1:]} differ in shape")
  if not 1 <= k <= len(reference_images):
    raise ValueError(f"k must be in [1, {len(reference_images)}], got {k}")
  queries = images.reshape(len(images), -1).astype(np.float64)
  references = reference_images.reshape(len(reference_images), -1).astype(np.float64)
  predictions = np.empty(len(images), np.int64)
  norms = np.sum(references**2, axis=1)
  for start in range(0, len(queries), 512):
    block = queries[start:start + 512]
    squared = np.sum(block**2, axis=1)[:, None] - 2.0 * block @ references.T + norms[None, :]
    nearest = np.argsort(squared, axis=1, kind="stable")[:, :k]
    for row, neighbours in enumerate(nearest):
      votes = np.bincount(reference_labels[neighbours], minlength=int(reference_labels.max()) + 1)
      winners = np.flatnonzero(votes == votes.max())
      predictions[start + row] = next(int(reference_labels[n]) for n in neighbours if reference_labels[n] in winners)
  return predictions


def knn_accuracy(images: np.ndarray, labels: np.ndarray, reference_images: np.ndarray, reference_labels: np.ndarray,
                 *, k: int = 3) -> dict:
  """``{"accuracy", "per_class": [...], "k", "num_reference"}``: how often ``knn_predict`` gives each image its
  ``labels``."""
  predicted = knn_predict(images, reference_images, reference_labels, k=k)
  classes = range(int(max(labels.max(), reference_labels.max())) + 1)
  per_class = [float(np.mean(predicted[labels == c] == c)) if np.any(labels == c) else None for c in classes]
  return {"accuracy": float(np.mean(predicted == labels)), "per_class": per_class, "k": k,
          "num_reference": int(len(reference_images))}
