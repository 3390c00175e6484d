"""The paper's toy MLPs (``gan_toy.py``): three hidden ReLU layers of 512, He initialisation."""

import flax.linen as nn
import jax

_he = nn.initializers.he_normal()


class ToyGenerator(nn.Module):
  """Maps 2-D Gaussian noise to 2-D points."""
  hidden: int = 512
  num_hidden_layers: int = 3
  output_dim: int = 2

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
    del train  # no batch norm
    x = z
    for _ in range(self.num_hidden_layers):
      x = nn.relu(nn.Dense(self.hidden, kernel_init=_he)(x))
    return nn.Dense(self.output_dim)(x)


class ToyCritic(nn.Module):
  """Maps 2-D points to one score each, shape ``(N,)``."""
  hidden: int = 512
  num_hidden_layers: int = 3

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for _ in range(self.num_hidden_layers):
      x = nn.relu(nn.Dense(self.hidden, kernel_init=_he)(x))
    return nn.Dense(1)(x)[:, 0]
