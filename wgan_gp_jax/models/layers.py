"""The image models' layers under each backend choice (``model.kernels`` once resolved): ``layer_set("cpu")`` is the
CPU kernels' modules (``wgan_gp_jax.kernels``), ``layer_set("xla")`` plain ``flax.linen`` layers, with no custom VJP.

Both sets have the same class names, attributes, variables (names, shapes, dtypes, initialisers) and functions, so a
model's parameters and batch statistics are the same tree under either, and a checkpoint trained with one loads with
the other. ``BatchNorm`` takes ``relu``: ``nn.relu`` on its output (fused into the normalisation by the kernels).
``BatchStatisticsNorm`` is batch norm that always normalises with the batch's own statistics and keeps no running
averages (no ``batch_stats``), for critics (``kernels.batch_norm`` under ``"cpu"``).
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wgan_gp_jax import kernels


class BatchNorm(nn.BatchNorm):
  """flax's ``nn.BatchNorm``, then ``nn.relu`` where ``relu``."""

  relu: bool = False

  def __call__(self, x: jax.Array, use_running_average: bool | None = None, **kwargs) -> jax.Array:
    y = super().__call__(x, use_running_average, **kwargs)
    return nn.relu(y) if self.relu else y


class BatchStatisticsNorm(nn.Module):
  """Batch norm over the last axis that always uses the batch's own per-channel mean and (biased) variance, in
  training and in evaluation alike, and keeps no running averages: its only variables are the parameters ``scale``
  and ``bias``. This is the batch norm of the critics of the WGAN-GP authors' ``gan_64x64.py`` (tflib's fused batch
  norm with ``is_training=None``, epsilon 1e-5). The output has ``dtype`` (default: ``x``'s); the statistics are
  float32. With ``cpu_kernels`` the normalisation is ``kernels.batch_norm`` (hand-written gradient, oneDNN's on
  XLA:CPU), else plain jax; the variables are the same.

  A critic with this layer scores each example as a function of the whole batch, which an input-gradient penalty
  cannot have (``objectives.Objective.allows_critic_batch_norm``).
  """
  epsilon: float = 1e-5
  dtype: Any = None
  cpu_kernels: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = (x.shape[-1],)
    scale = self.param("scale", nn.initializers.ones, features, jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, features, jnp.float32)
    dtype = self.dtype or x.dtype
    if self.cpu_kernels:
      return kernels.batch_norm(x, scale, bias, self.epsilon).astype(dtype)
    axes = tuple(range(x.ndim - 1))
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axes)
    variance = jnp.maximum(jnp.mean(jnp.square(x32), axes) - jnp.square(mean), 0.0)
    multiplier = scale * jax.lax.rsqrt(variance + self.epsilon)
    return (x32 * multiplier + (bias - mean * multiplier)).astype(dtype)


@dataclasses.dataclass(frozen=True)
class LayerSet:
  """The module classes the image models build their layers from."""
  Conv: type[nn.Module]
  ConvTranspose: type[nn.Module]
  Dense: type[nn.Module]
  BatchNorm: type[nn.Module]
  BatchStatisticsNorm: Any  # a BatchStatisticsNorm class or a partial of it: the modules are named after the class


_LAYER_SETS = {
    "xla": LayerSet(Conv=nn.Conv, ConvTranspose=nn.ConvTranspose, Dense=nn.Dense, BatchNorm=BatchNorm,
                    BatchStatisticsNorm=BatchStatisticsNorm),
    "cpu": LayerSet(Conv=kernels.Conv, ConvTranspose=kernels.ConvTranspose, Dense=kernels.Dense,
                    BatchNorm=kernels.BatchNorm,
                    BatchStatisticsNorm=functools.partial(BatchStatisticsNorm, cpu_kernels=True)),
}


def layer_set(choice: str) -> LayerSet:
  """The layers of a resolved choice, ``"xla"`` or ``"cpu"`` (``wgan_gp_jax.models.resolve_kernels`` resolves
  ``"auto"``)."""
  if choice not in _LAYER_SETS:
    raise ValueError(f"kernels must be one of {tuple(_LAYER_SETS)} (models.resolve_kernels resolves 'auto'), got "
                     f"{choice!r}.")
  return _LAYER_SETS[choice]
