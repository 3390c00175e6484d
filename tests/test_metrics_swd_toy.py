"""Weight-free metrics: Laplacian-pyramid SWD and the toy-mixture metrics."""

import itertools

import numpy as np
import pytest
import scipy.stats

from wgan_gp_jax.data import images as images_lib
from wgan_gp_jax.metrics import evaluation, swd, toy


def _faces_like(rng, n, size=32):
  """Smooth random images (blurred noise): structured enough for patch statistics to differ."""
  x = rng.standard_normal((n, size // 4, size // 4, 3))
  x = x.repeat(4, axis=1).repeat(4, axis=2)
  return np.clip(128 + 60 * x, 0, 255).astype(np.uint8)


def test_laplacian_pyramid_reconstructs_the_image_exactly():
  x = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
  levels = swd.laplacian_pyramid(x, num_levels=3)
  assert [l.shape[1] for l in levels] == [64, 32, 16]
  recon = levels[-1]
  for level in reversed(levels[:-1]):
    recon = level + swd._pyr_up(recon)
  np.testing.assert_allclose(recon, x, atol=1e-3)


def test_laplacian_levels_of_a_constant_image_are_zero():
  levels = swd.laplacian_pyramid(np.full((2, 32, 32, 3), 77.0), num_levels=2)
  np.testing.assert_allclose(levels[0], 0.0, atol=1e-4)
  np.testing.assert_allclose(levels[1], 77.0, atol=1e-4)
  with pytest.raises(ValueError, match="divisible"):
    swd.laplacian_pyramid(np.zeros((1, 30, 30, 3)), num_levels=3)


def test_sliced_wasserstein_in_one_dimension_is_exact_w1():
  # In 1-D every unit direction is +-1, so each projection gives W1 of the empirical measures.
  rng = np.random.default_rng(1)
  a, b = rng.standard_normal((500, 1)), rng.exponential(size=(500, 1))
  value = swd.sliced_wasserstein(a.astype(np.float32), b.astype(np.float32), num_repeats=2,
                                 directions_per_repeat=8, rng=rng)
  assert value == pytest.approx(scipy.stats.wasserstein_distance(a[:, 0], b[:, 0]), rel=1e-5)


def test_swd_of_real_faces_is_smallest_against_other_real_faces(shared_data):
  faces = images_lib.load_folder_images(shared_data / "celeba_10k" / "images", resolution=32, limit=400)
  rng = np.random.default_rng(2)
  real, other_real = faces[:200], faces[200:]
  noisy = np.clip(real + rng.normal(0, 40, real.shape), 0, 255).astype(np.uint8)
  blurred = real.reshape(200, 8, 4, 8, 4, 3).mean(axis=(2, 4)).repeat(4, 1).repeat(4, 2).astype(np.uint8)
  same = swd.sliced_wasserstein_distance(real, other_real, descriptors_per_image=32)
  assert set(same["swd_levels"]) == {32, 16}
  for distorted in (noisy, blurred):
    assert swd.sliced_wasserstein_distance(real, distorted, descriptors_per_image=32)["swd"] > 1.5 * same["swd"]


def test_quick_image_metric_runs_on_a_few_hundred_images():
  rng = np.random.default_rng(3)
  out = evaluation.quick_image_metric(_faces_like(rng, 256), _faces_like(rng, 256))
  assert np.isfinite(out["swd"]) and out["swd"] > 0
  with pytest.raises(ValueError, match="equal shape"):
    evaluation.quick_image_metric(_faces_like(rng, 256), _faces_like(rng, 128))


# ---------------------------------------------------------------------------------------------
# Toy metrics, with the 8-Gaussian convention of gan_toy.py.

_S = 1 / np.sqrt(2)
CENTRES_8 = 2 * np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (_S, _S), (_S, -_S), (-_S, _S), (-_S, -_S)]) / 1.414
STD_8 = 0.02 / 1.414


def _mixture(rng, centres, std, n):
  return centres[rng.integers(0, len(centres), n)] + std * rng.standard_normal((n, 2))


def test_mode_coverage_of_true_samples_matches_the_chi_square_3_sigma_probability():
  samples = _mixture(np.random.default_rng(4), CENTRES_8, STD_8, 40_000)
  out = toy.mode_coverage(samples, CENTRES_8, STD_8)
  assert out["modes_covered"] == out["num_modes"] == 8
  # |noise| / std ~ chi with 2 dof: P(|noise| <= 3 std) = 1 - exp(-9/2).
  assert out["high_quality_fraction"] == pytest.approx(1 - np.exp(-4.5), abs=3e-3)
  assert sum(out["mode_counts"]) == pytest.approx(out["high_quality_fraction"] * 40_000)


def test_mode_coverage_of_collapsed_and_off_mode_samples():
  rng = np.random.default_rng(5)
  collapsed = CENTRES_8[[0, 3]][rng.integers(0, 2, 1000)] + 0.5 * STD_8 * rng.standard_normal((1000, 2))
  out = toy.mode_coverage(collapsed, CENTRES_8, STD_8)
  assert out["modes_covered"] == 2 and out["high_quality_fraction"] == 1.0
  off = np.zeros((100, 2))  # The centre of the ring: far from every mode.
  assert toy.mode_coverage(off, CENTRES_8, STD_8)["high_quality_fraction"] == 0.0
  few = np.vstack([CENTRES_8[:1].repeat(5, 0), CENTRES_8[1:2].repeat(2, 0)])
  assert toy.mode_coverage(few, CENTRES_8, STD_8, min_count=3)["modes_covered"] == 1
  with pytest.raises(ValueError, match="std"):
    toy.mode_coverage(few, CENTRES_8, 0.0)


def test_exact_w1_matches_brute_force_and_one_dimensional_closed_form():
  rng = np.random.default_rng(6)
  a, b = rng.standard_normal((6, 2)), rng.standard_normal((6, 2))
  brute = min(np.mean(np.linalg.norm(a - b[list(p)], axis=1)) for p in itertools.permutations(range(6)))
  assert toy.exact_w1(a, b) == pytest.approx(brute, rel=1e-12)
  x, y = rng.standard_normal(300), rng.uniform(-1, 3, 300)
  on_line = lambda v: np.stack([v, np.zeros_like(v)], axis=1)
  assert toy.exact_w1(on_line(x), on_line(y)) == pytest.approx(scipy.stats.wasserstein_distance(x, y))
  with pytest.raises(ValueError, match="equal-size"):
    toy.exact_w1(a, b[:5])


def test_toy_metrics_combines_w1_and_coverage():
  rng = np.random.default_rng(7)
  real, fake = _mixture(rng, CENTRES_8, STD_8, 500), _mixture(rng, CENTRES_8, STD_8, 500)
  out = toy.toy_metrics(fake, real, centres=CENTRES_8, std=STD_8)
  assert out["modes_covered"] == 8 and out["w1"] < 0.2
  assert toy.toy_metrics(fake + 1.0, real)["w1"] > 0.8
