"""The pixel spread: 0 for one image repeated, 1 for real images against themselves, its formula on two images."""

import numpy as np
import pytest

from wgan_gp_jax.metrics import spread


def test_one_image_repeated_has_no_spread_and_two_images_have_half_their_difference():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (1, 4, 4, 3), dtype=np.uint8)
  assert spread.pixel_spread(np.repeat(image, 10, axis=0)) == 0.0
  # Two images a and b: each pixel's (population) standard deviation is |a - b| / 2.
  a, b = rng.integers(0, 256, (2, 1, 4, 4, 3)).astype(np.float64)
  assert spread.pixel_spread(np.concatenate([a, b])) == pytest.approx(np.mean(np.abs(a - b)) / 2)


def test_spread_ratio_of_real_images_against_themselves_is_one_and_a_collapsed_set_is_zero():
  real = np.random.default_rng(1).integers(0, 256, (50, 8, 8, 3), dtype=np.uint8)
  assert spread.spread_ratio(real, real) == pytest.approx(1.0)
  assert spread.spread_ratio(np.repeat(real[:1], 50, axis=0), real) == 0.0
  # Halving every image's distance to the mean image halves the spread.
  mean = real.astype(np.float64).mean(axis=0)
  assert spread.spread_ratio(mean + (real - mean) / 2, real) == pytest.approx(0.5)


def test_bad_shapes_are_refused_naming_them():
  with pytest.raises(ValueError, match=r"\(N, H, W, C\) with N >= 2, got shape \(1, 4, 4, 3\)"):
    spread.pixel_spread(np.zeros((1, 4, 4, 3)))
  with pytest.raises(ValueError, match="differ in shape"):
    spread.spread_ratio(np.zeros((2, 4, 4, 3)), np.zeros((2, 8, 8, 3)))
  with pytest.raises(ValueError, match="all the same image"):
    spread.spread_ratio(np.zeros((2, 4, 4, 3)), np.ones((3, 4, 4, 3)))
