"""The image models' layers under each backend choice (``model.kernels`` once resolved): ``layer_set("cpu")`` is the
CPU kernels' modules (``wgan_gp_jax.kernels``), ``layer_set("xla")`` plain ``flax.linen`` layers, with no custom VJP.

Both sets have the same class names, attributes, variables (names, shapes, dtypes, initialisers) and functions, so a
model's parameters and batch statistics are the same tree under either, and a checkpoint trained with one loads with
the other. ``BatchNorm`` takes ``relu``: ``nn.relu`` on its output (fused into the normalisation by the kernels).
"""

import dataclasses

import flax.linen as nn
import jax

from wgan_gp_jax import kernels


class BatchNorm(nn.BatchNorm):
  """flax's ``nn.BatchNorm``, then ``nn.relu`` where ``relu``."""

  relu: bool = False

  def __call__(self, x: jax.Array, use_running_average: bool | None = None, **kwargs) -> jax.Array:
    y = super().__call__(x, use_running_average, **kwargs)
    return nn.relu(y) if self.relu else y


@dataclasses.dataclass(frozen=True)
class LayerSet:
  """The module classes the image models build their layers from."""
  Conv: type[nn.Module]
  ConvTranspose: type[nn.Module]
  Dense: type[nn.Module]
  BatchNorm: type[nn.Module]


_LAYER_SETS = {
    "xla": LayerSet(Conv=nn.Conv, ConvTranspose=nn.ConvTranspose, Dense=nn.Dense, BatchNorm=BatchNorm),
    "cpu": LayerSet(Conv=kernels.Conv, ConvTranspose=kernels.ConvTranspose, Dense=kernels.Dense,
                    BatchNorm=kernels.BatchNorm),
}


def layer_set(choice: str) -> LayerSet:
  """The layers of a resolved choice, ``"xla"`` or ``"cpu"`` (``wgan_gp_jax.models.resolve_kernels`` resolves
  ``"auto"``)."""
  if choice not in _LAYER_SETS:
    raise ValueError(f"kernels must be one of {tuple(_LAYER_SETS)} (models.resolve_kernels resolves 'auto'), got "
                     f"{choice!r}.")
  return _LAYER_SETS[choice]
