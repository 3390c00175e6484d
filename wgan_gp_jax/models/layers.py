"""Convolutions shared by the image models: 'SAME' padding, NHWC, kernels HWIO (flax's layout)."""

import flax.linen as nn


class Conv(nn.Conv):
  """A 2-D convolution with 'SAME' padding; ``strides=2`` halves the resolution."""
  padding: str = "SAME"


class ConvTranspose(nn.ConvTranspose):
  """A 2-D transposed convolution with 'SAME' padding; ``strides=2`` doubles the resolution."""
  padding: str = "SAME"
