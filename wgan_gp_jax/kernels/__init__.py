"""The CPU compute kernels, and the one interface the rest of the package uses to reach them.

On XLA:CPU, convolutions and their derivatives of every order are Winograd tiles, oneDNN's direct convolutions or
im2col matrix products, chosen per face (``conv``, ``winograd``, ``onednn``); elsewhere they are ``lax``'s native
convolutions. ``Conv``, ``ConvTranspose``, ``Dense`` and ``BatchNorm`` are flax-compatible modules (flax's variables,
names and initialisers) computed by them, with custom VJPs: reverse mode only, to any order.

Whether a model or the Inception network uses them is an explicit choice (``CHOICES``), resolved by ``resolve``:
``"cpu"`` these kernels, ``"xla"`` plain ``flax.linen`` layers and ``lax`` convolutions (no custom VJP: forward mode
too), ``"auto"`` the kernels where the platform is XLA:CPU and plain layers elsewhere.

Modules outside this package import ``wgan_gp_jax.kernels`` only, never its submodules.
"""

import jax

from wgan_gp_jax.kernels.conv import conv2d, conv2d_transpose
from wgan_gp_jax.kernels.layers import BatchNorm, Conv, ConvTranspose, Dense, batch_norm, matmul
from wgan_gp_jax.kernels.winograd import conv2d as winograd_conv2d

__all__ = ["CHOICES", "resolve", "Conv", "ConvTranspose", "Dense", "BatchNorm", "conv2d", "conv2d_transpose",
           "winograd_conv2d", "matmul", "batch_norm"]

CHOICES = ("auto", "xla", "cpu")


def resolve(choice: str, platform: str | None = None, *, setting: str = "kernels") -> str:
  """``"xla"`` or ``"cpu"``: ``choice`` itself, or for ``"auto"`` ``"cpu"`` where ``platform`` (default
  ``jax.default_backend()``) is ``"cpu"`` and ``"xla"`` on any other. Raises ``ValueError`` naming ``setting`` for a
  choice not in ``CHOICES``."""
  if choice not in CHOICES:
    raise ValueError(f"unknown {setting} {choice!r} (valid: {', '.join(CHOICES)})")
  if choice != "auto":
    return choice
  return "cpu" if (platform or jax.default_backend()) == "cpu" else "xla"
