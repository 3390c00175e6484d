"""The architectures of the WGAN-GP paper's robustness experiment (Gulrajani et al. 2017, section 5.2, Figure 2,
Appendix H), after the authors' ``gan_64x64.py``, at every resolution ``4 * 2^k`` (k >= 1) that ``models.dcgan`` takes.

==============  =====================================================  ================================================
``model.name``  generator (``gan_64x64.py``)                           critic (``gan_64x64.py``)
==============  =====================================================  ================================================
``dcgan``       ``DCGANGenerator``: ``models.dcgan``, unchanged         ``DCGANDiscriminator``: ``models.dcgan``, or
                                                                       ``ConvCritic`` with batch norm
``g_no_bn``     ``WGANPaper_CrippledDCGANGenerator``: no batch norm,    ``DCGANDiscriminator`` (``ConvCritic``)
                ``width`` filters in every layer
``g_mlp``       ``FCGenerator``: 4 ReLU layers of 512, tanh             ``DCGANDiscriminator`` (``ConvCritic``)
``no_norm``     ``DCGANGenerator(bn=False)``                            ``DCGANDiscriminator(bn=False)``
``gated``       ``MultiplicativeDCGANGenerator``                        ``MultiplicativeDCGANDiscriminator``
``tanh``        ``DCGANGenerator(nonlinearity=tf.tanh)``                ``DCGANDiscriminator(nonlinearity=tf.tanh)``
``resnet101``   ``ResnetGenerator``: 101 layers                         ``ResnetDiscriminator``: 101 layers
==============  =====================================================  ================================================

Widths follow ``models.dcgan``: ``width`` filters at the highest resolution below the image, doubling at each halving
of the resolution (``gan_64x64.py``'s ``DIM`` at 64 pixels); the ResNet's blocks have ``width / 2`` at the image's
resolution, doubling at each halving, as ``ResnetGenerator`` (``DIM / 2`` at 64x64, ``8 * DIM`` at 4x4).

**Critic normalisation** is a function of the objective, as in ``gan_64x64.py``'s ``Normalize``: where the paper's
baseline critic has batch norm, a critic trained with an input-gradient penalty has layer norm over (H, W, C) instead
(the paper's section 4 and Appendix H: "we replace any batch normalization in the discriminator with layer
normalization"), and batch norm otherwise. ``critic_norm`` is ``"none"``, ``"layer"`` or ``"batch"``, resolved from
``model.critic_norm`` by ``models.critic_normalization`` (``"auto"``: ``paper_critic_norm``). Batch norm in a critic is
``layers.BatchStatisticsNorm``: the batch's own statistics always, no running averages (tflib's batch norm as the
authors call it), so a critic has no ``batch_stats``; the objectives that allow it score the real and the fake batch in
separate passes, as the authors' code does. The generators' batch norm is the models' usual one (running averages for
sampling; the authors' code samples with batch statistics).

**Where this follows the code rather than the paper's text:**

- ``gated``: the gate is ``sigmoid(a) * tanh(b)`` with ``a`` the even and ``b`` the odd channels of a layer with twice
  the filters (``pixcnn_gated_nonlinearity(output[:, ::2], output[:, 1::2])``); the first critic layer has no
  normalisation, as in every DCGAN critic.
- ``resnet101``: the 101 layers are those of the code: 33 bottleneck residual blocks (1x1 convolution to half the
  input's filters, 3x3 convolution, 1x1 convolution without bias, then the critic's normalisation (the generator's
  batch norm), ReLU before each convolution, the residual branch scaled by 0.3), plus the input and output layers:
  ``Linear`` + 99 convolutions + a 1x1 output convolution in the generator (output ``tanh(x / 5)``), a 1x1 input
  convolution + 99 convolutions + ``Linear`` (scores divided by 5) in the critic. The paper's text says only
  "101-layer ResNet". Up-sampling blocks have a transposed 3x3 convolution of stride 2 and a sub-pixel 1x1 shortcut
  (``SubpixelConv2D``); down-sampling blocks a 3x3 convolution of stride 2 and a strided 1x1 shortcut. At 64 pixels the
  generator's levels 4, 8, 16, 32 and 64 hold 6, 6, 6, 6 and 5 plain blocks with an up-sampling block after each but
  the last (the critic the same, reversed); at other resolutions the 33 blocks are spread over the levels in the same
  way (``resnet101_plain_blocks``: 8, 8, 7, 7 at 32 pixels), so the depth stays 101.
- ``g_no_bn``: ReLU after the input ``Linear`` and every transposed convolution, ``width`` filters throughout, no
  normalisation (the paper: "no BN and a constant number of filters in the generator").
- Initialisations are flax's defaults, as in ``models.dcgan``, not tflib's (He or N(0, 0.02)).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wgan_gp_jax.models.dcgan import num_resolution_doublings
from wgan_gp_jax.models.layers import layer_set
from wgan_gp_jax.models.conditional import score_outputs

# The rows of the paper's Figure 2, in its order; ``dcgan`` is ``models.dcgan``'s.
ARCHITECTURES = ("dcgan", "g_no_bn", "g_mlp", "no_norm", "gated", "tanh", "resnet101")
CRITIC_NORMS = ("none", "layer", "batch")  # a critic's normalisation once resolved
RESNET101_BLOCKS = 33  # bottleneck blocks of 3 convolutions: with the input and output layers, 101 layers
RESNET101_RESIDUAL_SCALE = 0.3  # gan_64x64.py's BottleneckResidualBlock: shortcut + 0.3 * residual
RESNET101_OUTPUT_SCALE = 5.0  # ResnetGenerator: tanh(x / 5); ResnetDiscriminator: scores / 5
MLP_HIDDEN_UNITS = 512  # FCGenerator's FC_DIM
MLP_HIDDEN_LAYERS = 4

_ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh, "leaky_relu": lambda x: nn.leaky_relu(x, 0.2)}


def paper_critic_norm(*, allows_batch_norm: bool) -> str:
  """The critic normalisation of the paper's robustness experiment for an objective: ``"batch"`` where the objective
  allows a batch-norm critic (``objectives.Objective.allows_critic_batch_norm``), ``"layer"`` where it penalises
  input gradients."""
  return "batch" if allows_batch_norm else "layer"


def gated_activation(x: jax.Array) -> jax.Array:
  """``sigmoid(x[..., 0::2]) * tanh(x[..., 1::2])``: half as many channels as ``x`` (an even number)."""
  if x.shape[-1] % 2:
    raise ValueError(f"the gated activation needs an even number of channels, got {x.shape[-1]}.")
  return jax.nn.sigmoid(x[..., 0::2]) * jnp.tanh(x[..., 1::2])


def _activate(x: jax.Array, activation: str) -> jax.Array:
  return gated_activation(x) if activation == "gated" else _ACTIVATIONS[activation](x)


def _critic_norm_layer(norm: str, kernels: str, dtype: Any):
  """The module class of a critic normalisation (called with no arguments), or None for ``"none"``."""
  if norm not in CRITIC_NORMS:
    raise ValueError(f"critic_norm must be one of {CRITIC_NORMS}, got {norm!r}.")
  if norm == "layer":
    return lambda: nn.LayerNorm(reduction_axes=(-3, -2, -1), feature_axes=-1, dtype=dtype)
  if norm == "batch":
    return lambda: layer_set(kernels).BatchStatisticsNorm(dtype=dtype)
  return None


class ConvGenerator(nn.Module):
  """The DCGAN generator family: ``Linear`` to 4x4, transposed 5x5 convolutions of stride 2 to the resolution, tanh.

  ``activation`` (``"relu"``, ``"tanh"`` or ``"gated"``: layers of twice the filters, ``gated_activation``) follows
  batch norm where ``batch_norm``; ``constant_width`` gives every layer ``width`` filters (else ``width * 2^i``, as
  ``models.dcgan.DCGANGenerator``, which this is with ReLU and batch norm).
  """
  resolution: int = 64
  channels: int = 3
  width: int = 64
  activation: str = "relu"
  batch_norm: bool = True
  constant_width: bool = False
  dtype: Any = jnp.float32
  kernels: str = "xla"

  def _normalise_and_activate(self, x: jax.Array, train: bool) -> jax.Array:
    layers = layer_set(self.kernels)
    fused_relu = self.activation == "relu"
    if self.batch_norm:
      x = layers.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype, relu=fused_relu)(x)
      return x if fused_relu else _activate(x, self.activation)
    return _activate(x, self.activation)

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
    layers = layer_set(self.kernels)
    doublings = num_resolution_doublings(self.resolution)
    multiplier = 2 if self.activation == "gated" else 1

    def features(level: int) -> int:  # level 0 is 4x4
      return self.width if self.constant_width else self.width * 2 ** (doublings - 1 - level)

    x = layers.Dense(4 * 4 * features(0) * multiplier, dtype=self.dtype)(z)
    x = self._normalise_and_activate(x.reshape(z.shape[0], 4, 4, features(0) * multiplier), train)
    for level in range(1, doublings):
      x = layers.ConvTranspose(features(level) * multiplier, (5, 5), strides=(2, 2), dtype=self.dtype)(x)
      x = self._normalise_and_activate(x, train)
    x = layers.ConvTranspose(self.channels, (5, 5), strides=(2, 2), dtype=self.dtype)(x)
    return jnp.tanh(x.astype(jnp.float32))


class ConvCritic(nn.Module):
  """The DCGAN critic family: 5x5 convolutions of stride 2 from the resolution to 4x4 with ``width * 2^i`` filters,
  ``norm`` after every convolution but the first, ``activation`` (``"leaky_relu"`` (0.2), ``"tanh"`` or ``"gated"``:
  convolutions of twice the filters, ``gated_activation``), ``Linear`` to one score. With LeakyReLU and ``norm``
  ``"none"`` or ``"layer"`` it is ``models.dcgan.DCGANCritic`` (the same variables and scores)."""
  width: int = 64
  norm: str = "none"
  activation: str = "leaky_relu"
  dtype: Any = jnp.float32
  outputs: int = 1  # 1: the scores (N,); 1 + K: (N, 1 + K), the scores then K class logits (models.conditional)
  kernels: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    layers = layer_set(self.kernels)
    norm_layer = _critic_norm_layer(self.norm, self.kernels, self.dtype)
    multiplier = 2 if self.activation == "gated" else 1
    for i in range(num_resolution_doublings(x.shape[1])):
      x = layers.Conv(self.width * 2**i * multiplier, (5, 5), strides=(2, 2), dtype=self.dtype)(x)
      if norm_layer is not None and i > 0:
        x = norm_layer()(x)
      x = _activate(x, self.activation)
    return score_outputs(layers.Dense(self.outputs, dtype=self.dtype)(x.reshape(x.shape[0], -1)))


class MLPGenerator(nn.Module):
  """``FCGenerator``: ``MLP_HIDDEN_LAYERS`` ReLU layers of ``hidden`` units, a ``Linear`` layer to every pixel, tanh,
  reshaped to ``(resolution, resolution, channels)``."""
  resolution: int = 64
  channels: int = 3
  hidden: int = MLP_HIDDEN_UNITS
  dtype: Any = jnp.float32
  kernels: str = "xla"

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
    del train  # no batch norm
    layers = layer_set(self.kernels)
    x = z
    for _ in range(MLP_HIDDEN_LAYERS):
      x = nn.relu(layers.Dense(self.hidden, dtype=self.dtype)(x))
    x = layers.Dense(self.resolution * self.resolution * self.channels, dtype=self.dtype)(x)
    return jnp.tanh(x.astype(jnp.float32)).reshape(z.shape[0], self.resolution, self.resolution, self.channels)


def depth_to_space(x: jax.Array, block: int = 2) -> jax.Array:
  """TensorFlow's ``depth_to_space`` on NHWC: ``(N, H, W, block^2 * C) -> (N, block * H, block * W, C)``."""
  n, h, w, c = x.shape
  channels = c // (block * block)
  x = x.reshape(n, h, w, block, block, channels).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h * block, w * block, channels)


def resnet101_plain_blocks(doublings: int, blocks: int = RESNET101_BLOCKS) -> list[int]:
  """The blocks without resampling at each of the ``doublings + 1`` levels (4x4 first) of the generator of ``blocks``
  blocks: ``blocks`` minus the ``doublings`` up-sampling blocks, spread evenly, the lower resolutions taking the
  remainder (6, 6, 6, 6, 5 of 33 at 64 pixels, as ``ResnetGenerator``). The critic has them in the reverse order."""
  levels = doublings + 1
  plain = blocks - doublings
  if plain < 0:
    raise ValueError(f"{blocks} blocks cannot hold the {doublings} resampling blocks of this resolution.")
  return [plain // levels + (1 if level < plain % levels else 0) for level in range(levels)]


class BottleneckBlock(nn.Module):
  """``gan_64x64.py``'s ``BottleneckResidualBlock``: ``shortcut + 0.3 * norm(conv1x1(relu(conv3x3(relu(conv1x1(
  relu(x)))))))`` with ``features`` output filters; ``resample`` None, ``"up"`` or ``"down"``. ``norm`` is
  ``"running_batch"`` (the generator's batch norm), or a critic normalisation (``CRITIC_NORMS``)."""
  features: int
  resample: str | None = None
  norm: str = "none"
  dtype: Any = jnp.float32
  kernels: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    layers = layer_set(self.kernels)
    inputs = x.shape[-1]
    if self.resample is None:
      shortcut = x if self.features == inputs else layers.Conv(self.features, (1, 1), dtype=self.dtype)(x)
    elif self.resample == "up":
      shortcut = depth_to_space(layers.Conv(4 * self.features, (1, 1), dtype=self.dtype)(x))
    elif self.resample == "down":
      shortcut = layers.Conv(self.features, (1, 1), strides=(2, 2), dtype=self.dtype)(x)
    else:
      raise ValueError(f"resample must be None, 'up' or 'down', got {self.resample!r}.")
    y = layers.Conv(inputs // 2, (1, 1), dtype=self.dtype)(nn.relu(x))
    y = nn.relu(y)
    if self.resample == "up":
      y = layers.ConvTranspose(self.features // 2, (3, 3), strides=(2, 2), dtype=self.dtype)(y)
    else:
      strides = (2, 2) if self.resample == "down" else (1, 1)
      y = layers.Conv(self.features // 2, (3, 3), strides=strides, dtype=self.dtype)(y)
    y = layers.Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype)(nn.relu(y))
    if self.norm == "running_batch":
      y = layers.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(y)
    else:
      norm_layer = _critic_norm_layer(self.norm, self.kernels, self.dtype)
      if norm_layer is not None:
        y = norm_layer()(y)
    return shortcut + RESNET101_RESIDUAL_SCALE * y


def _resnet101_features(width: int, doublings: int, level: int) -> int:
  """Filters at ``level`` (0 is 4x4): ``width / 2`` at the image's resolution, doubling at each halving."""
  if width % 4:
    raise ValueError(f"the 101-layer ResNet needs a width divisible by 4 (its bottlenecks have width / 4 filters at"
                     f" the image's resolution), got {width}.")
  return width // 2 * 2 ** (doublings - level)


class ResNet101Generator(nn.Module):
  """``ResnetGenerator``: ``Linear`` to 4x4, ``blocks`` (33) bottleneck blocks (``resnet101_plain_blocks`` per level,
  an up-sampling block between levels), a 1x1 convolution to the channels, ``tanh(x / 5)``. Fewer ``blocks`` make a
  shallower network of the same blocks (for tests)."""
  resolution: int = 64
  channels: int = 3
  width: int = 64
  blocks: int = RESNET101_BLOCKS
  dtype: Any = jnp.float32
  kernels: str = "xla"

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
    layers = layer_set(self.kernels)
    doublings = num_resolution_doublings(self.resolution)
    features = [_resnet101_features(self.width, doublings, level) for level in range(doublings + 1)]
    x = layers.Dense(4 * 4 * features[0], dtype=self.dtype)(z).reshape(z.shape[0], 4, 4, features[0])
    for level, plain in enumerate(resnet101_plain_blocks(doublings, self.blocks)):
      for _ in range(plain):
        x = BottleneckBlock(features[level], norm="running_batch", dtype=self.dtype, kernels=self.kernels)(x, train)
      if level < doublings:
        x = BottleneckBlock(features[level + 1], resample="up", norm="running_batch", dtype=self.dtype,
                            kernels=self.kernels)(x, train)
    x = layers.Conv(self.channels, (1, 1), dtype=self.dtype)(x)
    return jnp.tanh(x.astype(jnp.float32) / RESNET101_OUTPUT_SCALE)


class ResNet101Critic(nn.Module):
  """``ResnetDiscriminator``: a 1x1 convolution to ``width / 2`` filters, ``blocks`` (33) bottleneck blocks with
  ``norm`` (``resnet101_plain_blocks`` reversed, a down-sampling block between levels), ``Linear`` from 4x4 to one
  score, divided by 5."""
  width: int = 64
  norm: str = "none"
  blocks: int = RESNET101_BLOCKS
  dtype: Any = jnp.float32
  outputs: int = 1  # 1: the scores (N,); 1 + K: (N, 1 + K), the scores then K class logits (models.conditional)
  kernels: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    layers = layer_set(self.kernels)
    doublings = num_resolution_doublings(x.shape[1])
    features = [_resnet101_features(self.width, doublings, level) for level in range(doublings + 1)]
    x = layers.Conv(features[doublings], (1, 1), dtype=self.dtype)(x)
    plain_blocks = resnet101_plain_blocks(doublings, self.blocks)
    for level in reversed(range(doublings + 1)):
      for _ in range(plain_blocks[level]):
        x = BottleneckBlock(features[level], norm=self.norm, dtype=self.dtype, kernels=self.kernels)(x)
      if level > 0:
        x = BottleneckBlock(features[level - 1], resample="down", norm=self.norm, dtype=self.dtype,
                            kernels=self.kernels)(x)
    scores = score_outputs(layers.Dense(self.outputs, dtype=self.dtype)(x.reshape(x.shape[0], -1)))
    return scores / RESNET101_OUTPUT_SCALE


# The critic normalisations each architecture can have: ``no_norm`` has none by definition.
SUPPORTED_CRITIC_NORMS = {name: CRITIC_NORMS for name in ARCHITECTURES} | {"no_norm": ("none",)}


def build(name: str, *, resolution: int, channels: int, width: int, critic_norm: str, dtype: Any,
          kernels: str) -> tuple[nn.Module, nn.Module]:
  """The generator and critic of architecture ``name`` (``ARCHITECTURES`` but ``dcgan``, which ``models.build_models``
  builds from ``models.dcgan``) with a resolved ``critic_norm`` (``CRITIC_NORMS``, one of
  ``SUPPORTED_CRITIC_NORMS[name]``); ``kernels`` resolved (``"xla"`` or ``"cpu"``)."""
  if critic_norm not in SUPPORTED_CRITIC_NORMS.get(name, ()):
    raise ValueError(f"the {name} critic cannot have critic_norm={critic_norm!r}; it takes "
                     f"{SUPPORTED_CRITIC_NORMS.get(name)}.")
  image = dict(resolution=resolution, channels=channels, dtype=dtype, kernels=kernels)
  dcgan_critic = ConvCritic(width=width, norm=critic_norm, dtype=dtype, kernels=kernels)
  if name == "g_no_bn":
    return ConvGenerator(width=width, batch_norm=False, constant_width=True, **image), dcgan_critic
  if name == "g_mlp":
    return MLPGenerator(**image), dcgan_critic
  if name == "no_norm":
    return ConvGenerator(width=width, batch_norm=False, **image), dcgan_critic
  if name in ("gated", "tanh"):
    critic_activation = "gated" if name == "gated" else "tanh"
    return (ConvGenerator(width=width, activation=name, **image),
            ConvCritic(width=width, norm=critic_norm, activation=critic_activation, dtype=dtype, kernels=kernels))
  if name == "resnet101":
    return (ResNet101Generator(width=width, **image),
            ResNet101Critic(width=width, norm=critic_norm, dtype=dtype, kernels=kernels))
  raise ValueError(f"build makes {ARCHITECTURES[1:]}, not {name!r}.")
