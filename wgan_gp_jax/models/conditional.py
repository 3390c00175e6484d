"""Class-conditional models (the paper's AC-GAN setting, Odena et al. 2017): a generator told which class to make,
and a critic that scores and classifies.

The generator is any of ``models``' generators with a learned embedding of the label joined to its latent
(``ClassConditionalGenerator``; the DCGAN's and the toy MLP's conditioning). The critic is any of ``models``' critics
with ``outputs = 1 + num_classes``: one linear layer gives the score and the class logits side by side, so the
gradient penalty, taken on the score alone, sees the same network as an unconditional critic's.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["ClassConditionalGenerator", "score_outputs", "split_outputs"]


def score_outputs(outputs: jax.Array) -> jax.Array:
  """A critic's last layer ``(N, outputs)`` as it returns it, in float32: the scores ``(N,)`` where ``outputs`` is
  1, else ``(N, 1 + K)`` (``split_outputs``)."""
  return (outputs[:, 0] if outputs.shape[-1] == 1 else outputs).astype(jnp.float32)  # as unconditional critics did


def split_outputs(outputs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(scores (N,), class logits (N, K))`` of an auxiliary-classifier critic's ``(N, 1 + K)`` outputs."""
  if outputs.ndim != 2 or outputs.shape[-1] < 2:
    raise ValueError(f"an auxiliary-classifier critic gives (N, 1 + K) outputs, got shape {outputs.shape}")
  return outputs[:, 0], outputs[:, 1:]


class ClassConditionalGenerator(nn.Module):
  """``generator`` conditioned on ``labels`` (int ``(N,)`` in ``[0, num_classes)``): their learned embedding, as wide
  as the latent, joined to the latent."""
  generator: nn.Module
  num_classes: int

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = True, labels: jax.Array | None = None) -> jax.Array:
    if labels is None or labels.shape != z.shape[:1]:
      raise ValueError(f"a class-conditional generator needs one label per latent: latents {z.shape}, labels"
                       f" {None if labels is None else labels.shape}")
    embedding = nn.Embed(self.num_classes, z.shape[-1], name="class_embedding")(labels)
    return self.generator(jnp.concatenate([z, embedding.astype(z.dtype)], axis=-1), train=train)
