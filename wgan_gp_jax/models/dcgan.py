"""DCGAN-style generator and critic at 32, 64 or 128 pixels (the paper's ``gan_64x64.py`` DCGAN).

Generator: linear -> 4x4 -> transposed convolutions (kernel 5, stride 2) with batch
norm + ReLU, tanh out. Critic: strided convolutions (kernel 5, stride 2) with
LeakyReLU(0.2), no batch norm (optional layer norm over C, H, W as in the paper's
code), linear out.

``dtype`` is what activations and products are computed in; parameters, batch-norm and layer-norm statistics,
samples and scores are float32. ``kernels`` (``"xla"`` or ``"cpu"``) picks the layers (``layers.layer_set``); the
variables are the same under both.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wgan_gp_jax.models.layers import layer_set
from wgan_gp_jax.models.conditional import score_outputs


def num_resolution_doublings(resolution: int) -> int:
  """How many stride-2 layers lie between 4x4 and ``resolution``."""
  doublings = int(round(math.log2(resolution / 4))) if resolution >= 8 else 0
  if resolution < 8 or 4 * 2**doublings != resolution:
    raise ValueError(f"resolution must be 4 * 2^k with k >= 1 (8, 16, 32, 64, 128, ...), got {resolution}.")
  return doublings


class DCGANGenerator(nn.Module):
  resolution: int = 64
  channels: int = 3
  width: int = 64
  dtype: Any = jnp.float32
  kernels: str = "xla"

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
    layers = layer_set(self.kernels)
    doublings = num_resolution_doublings(self.resolution)
    features = self.width * 2 ** (doublings - 1)
    x = layers.Dense(4 * 4 * features, dtype=self.dtype)(z).reshape(z.shape[0], 4, 4, features)
    x = layers.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype, relu=True)(x)
    for i in range(doublings - 1):
      x = layers.ConvTranspose(features // 2 ** (i + 1), (5, 5), strides=(2, 2), dtype=self.dtype)(x)
      x = layers.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype, relu=True)(x)
    x = layers.ConvTranspose(self.channels, (5, 5), strides=(2, 2), dtype=self.dtype)(x)
    return jnp.tanh(x.astype(jnp.float32))


class DCGANCritic(nn.Module):
  width: int = 64
  layer_norm: bool = False
  dtype: Any = jnp.float32
  outputs: int = 1  # 1: the scores (N,); 1 + K: (N, 1 + K), the scores then K class logits (models.conditional)
  kernels: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    layers = layer_set(self.kernels)
    doublings = num_resolution_doublings(x.shape[1])
    for i in range(doublings):
      x = layers.Conv(self.width * 2**i, (5, 5), strides=(2, 2), dtype=self.dtype)(x)
      if self.layer_norm and i > 0:
        x = nn.LayerNorm(reduction_axes=(-3, -2, -1), feature_axes=-1, dtype=self.dtype)(x)
      x = nn.leaky_relu(x, 0.2)
    return score_outputs(layers.Dense(self.outputs, dtype=self.dtype)(x.reshape(x.shape[0], -1)))
