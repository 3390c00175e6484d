"""Do a class-conditional generator's samples show the class they were asked for? A classifier that did not train the
GAN (a small CNN, or k nearest neighbours in pixel space, fitted on real images the GAN never saw) labels them.

References:
  Odena, Olah and Shlens, "Conditional image synthesis with auxiliary classifier GANs", 2017 (samples' class
  accuracy under an independent classifier).
"""

from __future__ import annotations

import numpy as np

__all__ = ["knn_predict", "knn_accuracy", "fit_classifier", "independent_accuracy"]


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


class _DigitNet:
  """A small convolutional classifier (two 3x3 convolutions of 32 and 64 filters with 2x2 max pooling, a 128-unit
  dense layer), as flax modules built on first use."""

  @staticmethod
  def module(num_classes: int):
    import flax.linen as nn

    class Net(nn.Module):
      @nn.compact
      def __call__(self, x):
        for features in (32, 64):
          x = nn.max_pool(nn.relu(nn.Conv(features, (3, 3))(x)), (2, 2), strides=(2, 2))
        x = nn.relu(nn.Dense(128)(x.reshape(x.shape[0], -1)))
        return nn.Dense(num_classes)(x)

    return Net()


def fit_classifier(images: np.ndarray, labels: np.ndarray, *, steps: int = 3000, batch_size: int = 64,
                   max_shift: int = 2, seed: int = 0):
  """A small CNN (``_DigitNet``) fitted with Adam(1e-3) for ``steps`` batches on uint8 ``images`` ``(N, H, W, C)``
  and int ``labels``, each image shifted by up to ``max_shift`` pixels each way (zeros filling in): a classifier that
  never saw a generator's samples. Returns ``predict(images) -> labels``."""
  import jax
  import jax.numpy as jnp
  import optax

  num_classes = int(labels.max()) + 1
  net = _DigitNet.module(num_classes)
  x = jnp.asarray(images, jnp.float32) / 127.5 - 1.0
  y = jnp.asarray(labels, jnp.int32)
  params = net.init(jax.random.key(seed), x[:1])
  optimizer = optax.adam(1e-3)

  @jax.jit
  def step(params, opt_state, key):
    batch_key, shift_key = jax.random.split(key)
    batch = jax.random.randint(batch_key, (batch_size,), 0, len(x))
    padded = jnp.pad(x[batch], ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)), constant_values=-1.0)
    offsets = jax.random.randint(shift_key, (batch_size, 2), 0, 2 * max_shift + 1)
    shifted = jax.vmap(lambda image, offset: jax.lax.dynamic_slice(
        image, (offset[0], offset[1], 0), x.shape[1:]))(padded, offsets)

    def loss(params):
      logits = net.apply(params, shifted)
      return jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(logits, y[batch]))

    grads = jax.grad(loss)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  opt_state = optimizer.init(params)
  key = jax.random.key(seed + 1)
  for index in range(steps):
    params, opt_state = step(params, opt_state, jax.random.fold_in(key, index))
  predict_batch = jax.jit(lambda batch: jnp.argmax(net.apply(params, batch), axis=-1))

  def predict(query: np.ndarray) -> np.ndarray:
    query = jnp.asarray(query, jnp.float32) / 127.5 - 1.0
    return np.concatenate([np.asarray(predict_batch(query[i:i + 1000])) for i in range(0, len(query), 1000)])

  return predict


def independent_accuracy(samples: np.ndarray, sample_labels: np.ndarray, real_images: np.ndarray,
                         real_labels: np.ndarray, *, test_images: int = 500, fit_steps: int = 3000,
                         seed: int = 0) -> dict:
  """How often samples show the class asked of them, under a classifier fitted on real images the GAN never saw.

  ``fit_classifier`` fits (``fit_steps`` batches) on all but the last ``test_images`` of ``real_images`` (uint8, with
  ``real_labels``); its accuracy on those last ones (real images it never saw) is the ceiling the samples' accuracy
  stands beside.
  Returns ``{"accuracy", "per_class", "real_accuracy", "num_fit", "num_real_test", "num_samples"}``.
  """
  if not 0 < test_images < len(real_images):
    raise ValueError(f"test_images must be in (0, {len(real_images)}), got {test_images}")
  fit_images, fit_labels = real_images[:-test_images], real_labels[:-test_images]
  predict = fit_classifier(fit_images, fit_labels, steps=fit_steps, seed=seed)
  predicted = predict(samples)
  classes = range(int(max(sample_labels.max(), real_labels.max())) + 1)
  per_class = [float(np.mean(predicted[sample_labels == c] == c)) if np.any(sample_labels == c) else None
               for c in classes]
  return {"accuracy": float(np.mean(predicted == sample_labels)), "per_class": per_class,
          "real_accuracy": float(np.mean(predict(real_images[-test_images:]) == real_labels[-test_images:])),
          "num_fit": int(len(fit_images)), "num_real_test": int(test_images), "num_samples": int(len(samples))}
