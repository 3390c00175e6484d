"""How much images differ from one another, in pixels: a detector of mode collapse that needs no weights.

FID far above its floor (a few hundred) mixes blur, colour and diversity into one number, and a generator whose
samples are all one image can score as well there as a diverse blurry one. The spread separates the two: the standard
deviation of each pixel across the images, averaged over pixels and channels, as a fraction of the same for real
images. A collapsed generator gives about 0, real images 1; independent noise can exceed 1, so the spread detects
collapse and says nothing else of quality.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pixel_spread", "spread_ratio"]


def pixel_spread(images: np.ndarray) -> float:
  """The standard deviation of each pixel and channel across ``images`` (``(N, H, W, C)``, N >= 2, any dtype, values
  as stored), averaged over pixels and channels."""
  images = np.asarray(images)
  if images.ndim != 4 or len(images) < 2:
    raise ValueError(f"images must be (N, H, W, C) with N >= 2, got shape {images.shape}")
  return float(np.mean(np.std(images.astype(np.float64), axis=0)))


def spread_ratio(fake: np.ndarray, real: np.ndarray) -> float:
  """``pixel_spread(fake) / pixel_spread(real)``, for images of one shape and one value range."""
  fake, real = np.asarray(fake), np.asarray(real)
  if fake.shape[1:] != real.shape[1:]:
    raise ValueError(f"fake and real images differ in shape: {fake.shape[1:]} and {real.shape[1:]}")
  real_spread = pixel_spread(real)
  if real_spread == 0:
    raise ValueError("the real images are all the same image: their spread is 0")
  return pixel_spread(fake) / real_spread
