"""The paper's toy MLPs (``gan_toy.py``): three hidden ReLU layers of 512, He initialisation.

``dtype`` is what activations and products are computed in; parameters, points and scores are float32.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from wgan_gp_jax.models.conditional import score_outputs

_he = nn.initializers.he_normal()


class ToyGenerator(nn.Module):
  """Maps 2-D Gaussian noise to 2-D points."""
  hidden: int = 512
  num_hidden_layers: int = 3
  output_dim: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
    del train  # no batch norm
    x = z
    for _ in range(self.num_hidden_layers):
      x = nn.relu(nn.Dense(self.hidden, kernel_init=_he, dtype=self.dtype)(x))
    return nn.Dense(self.output_dim, dtype=self.dtype)(x).astype(jnp.float32)


class ToyCritic(nn.Module):
  """Maps 2-D points to one score each, shape ``(N,)``."""
  hidden: int = 512
  num_hidden_layers: int = 3
  dtype: Any = jnp.float32
  outputs: int = 1  # 1: the scores (N,); 1 + K: (N, 1 + K), the scores then K class logits (models.conditional)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for _ in range(self.num_hidden_layers):
      x = nn.relu(nn.Dense(self.hidden, kernel_init=_he, dtype=self.dtype)(x))
    return score_outputs(nn.Dense(self.outputs, dtype=self.dtype)(x))
