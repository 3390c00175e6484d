"""The paper's CIFAR-10 ResNet generator and critic (``gan_cifar_resnet.py``, unsupervised).

Generator: linear -> 4x4x``width`` -> three upsampling residual blocks (batch
norm, ReLU, 3x3 convolutions) -> batch norm, ReLU, 3x3 convolution, tanh.
Critic, without normalisation: an optimised first residual block that halves the
resolution, one downsampling block, two plain blocks, ReLU, global mean pool,
linear. Upsampling is nearest-neighbour, downsampling a 2x2 mean pool, as in the
paper's code.

``dtype`` is what activations and products are computed in; parameters, batch-norm statistics, samples and scores are
float32. ``kernels`` (``"xla"`` or ``"cpu"``) picks the layers (``layers.layer_set``); the variables are the same under
both.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wgan_gp_jax.models.dcgan import num_resolution_doublings
from wgan_gp_jax.models.layers import layer_set
from wgan_gp_jax.models.conditional import score_outputs


def _upsample(x: jax.Array) -> jax.Array:
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _mean_pool(x: jax.Array) -> jax.Array:
  n, h, w, c = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class ConditionalBatchNorm(nn.Module):
  """Batch norm whose scale and offset are the class's (de Vries et al. 2017; the authors' ``gan_cifar_resnet.py``
  conditions its generator this way), then ReLU: the normalised ``x`` times a learned per-class scale (1 at the start)
  plus a per-class offset (0)."""
  num_classes: int
  dtype: Any = jnp.float32
  kernels: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array, train: bool) -> jax.Array:
    y = layer_set(self.kernels).BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
    features = x.shape[-1]
    scale = nn.Embed(self.num_classes, features, embedding_init=nn.initializers.ones, name="class_scale")(labels)
    offset = nn.Embed(self.num_classes, features, embedding_init=nn.initializers.zeros, name="class_offset")(labels)
    y = y.astype(jnp.float32) * scale[:, None, None, :] + offset[:, None, None, :]
    return nn.relu(y).astype(self.dtype)


def _norm_relu(x: jax.Array, labels: jax.Array | None, *, num_classes: int, train: bool, dtype: Any,
               kernels: str) -> jax.Array:
  """Batch norm and ReLU: the class's (``ConditionalBatchNorm``) where ``num_classes``, else the layers' own."""
  if num_classes:
    return ConditionalBatchNorm(num_classes, dtype=dtype, kernels=kernels)(x, labels, train)
  return layer_set(kernels).BatchNorm(use_running_average=not train, momentum=0.9, dtype=dtype, relu=True)(x)


class GeneratorBlock(nn.Module):
  """Pre-activation residual block that doubles the resolution (its batch norms the class's where ``num_classes``)."""
  features: int
  dtype: Any = jnp.float32
  kernels: str = "xla"
  num_classes: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, labels: jax.Array | None = None) -> jax.Array:
    layers = layer_set(self.kernels)
    norm = dict(num_classes=self.num_classes, train=train, dtype=self.dtype, kernels=self.kernels)
    shortcut = layers.Conv(self.features, (1, 1), dtype=self.dtype)(_upsample(x))
    y = _norm_relu(x, labels, **norm)
    y = layers.Conv(self.features, (3, 3), dtype=self.dtype)(_upsample(y))
    y = _norm_relu(y, labels, **norm)
    y = layers.Conv(self.features, (3, 3), dtype=self.dtype)(y)
    return shortcut + y


class CriticBlock(nn.Module):
  """Pre-activation residual block without normalisation; ``downsample`` halves the resolution."""
  features: int
  downsample: bool
  dtype: Any = jnp.float32
  kernels: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    layers = layer_set(self.kernels)
    if self.downsample:
      shortcut = _mean_pool(layers.Conv(self.features, (1, 1), dtype=self.dtype)(x))
    elif x.shape[-1] != self.features:
      shortcut = layers.Conv(self.features, (1, 1), dtype=self.dtype)(x)
    else:
      shortcut = x
    y = layers.Conv(x.shape[-1], (3, 3), dtype=self.dtype)(nn.relu(x))
    y = layers.Conv(self.features, (3, 3), dtype=self.dtype)(nn.relu(y))
    if self.downsample:
      y = _mean_pool(y)
    return shortcut + y


class ResNetGenerator(nn.Module):
  """The authors' CIFAR-10 ResNet generator; with ``num_classes``, class-conditional by its batch norms
  (``ConditionalBatchNorm``), as their ``gan_cifar_resnet.py``, and called with ``labels``."""
  resolution: int = 32
  channels: int = 3
  width: int = 128
  dtype: Any = jnp.float32
  kernels: str = "xla"
  num_classes: int = 0

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = True, labels: jax.Array | None = None) -> jax.Array:
    if (labels is not None) != bool(self.num_classes):
      raise ValueError(f"labels are for a class-conditional generator (num_classes={self.num_classes})")
    layers = layer_set(self.kernels)
    x = layers.Dense(4 * 4 * self.width, dtype=self.dtype)(z).reshape(z.shape[0], 4, 4, self.width)
    for _ in range(num_resolution_doublings(self.resolution)):
      x = GeneratorBlock(self.width, dtype=self.dtype, kernels=self.kernels, num_classes=self.num_classes)(
          x, train, labels)
    x = _norm_relu(x, labels, num_classes=self.num_classes, train=train, dtype=self.dtype, kernels=self.kernels)
    return jnp.tanh(layers.Conv(self.channels, (3, 3), dtype=self.dtype)(x).astype(jnp.float32))


class ResNetCritic(nn.Module):
  width: int = 128
  dtype: Any = jnp.float32
  outputs: int = 1  # 1: the scores (N,); 1 + K: (N, 1 + K), the scores then K class logits (models.conditional)
  kernels: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    layers = layer_set(self.kernels)
    downsamplings = num_resolution_doublings(x.shape[1]) - 1  # stop at 8x8, as at 32 pixels
    if downsamplings < 1:
      raise ValueError(f"ResNetCritic needs inputs of at least 16x16, got {x.shape[1:3]}.")
    # The optimised first block: convolutions on the raw image, then pooling.
    shortcut = layers.Conv(self.width, (1, 1), dtype=self.dtype)(_mean_pool(x))
    y = layers.Conv(self.width, (3, 3), dtype=self.dtype)(x)
    y = _mean_pool(layers.Conv(self.width, (3, 3), dtype=self.dtype)(nn.relu(y)))
    x = shortcut + y
    for _ in range(downsamplings - 1):
      x = CriticBlock(self.width, downsample=True, dtype=self.dtype, kernels=self.kernels)(x)
    x = CriticBlock(self.width, downsample=False, dtype=self.dtype, kernels=self.kernels)(x)
    x = CriticBlock(self.width, downsample=False, dtype=self.dtype, kernels=self.kernels)(x)
    x = jnp.mean(nn.relu(x), axis=(1, 2))
    return score_outputs(layers.Dense(self.outputs, dtype=self.dtype)(x))
