import numpy as np
import pytest

from wgan_gp_jax.metrics import slopes


def test_whole_batch_norm_is_the_norm_of_the_whole_batch_gradient():
  rng = np.random.default_rng(0)
  gradients = rng.normal(size=(12, 5, 5, 3))
  norms = np.sqrt(np.sum(np.square(gradients), axis=(1, 2, 3)))
  stats = slopes.slope_statistics(norms, batch_size=4)
  expected = [np.linalg.norm(gradients[i:i + 4]) for i in (0, 4, 8)]  # the tutorial's tf.norm of a batch
  np.testing.assert_allclose(stats["whole_batch_norms"], expected, rtol=1e-12)
  assert stats["whole_batch_penalty"] == pytest.approx(np.mean((np.array(expected) - 1) ** 2))
  assert stats["per_example_penalty"] == pytest.approx(np.mean((norms - 1) ** 2))


def test_norms_of_one_over_sqrt_batch_meet_the_tutorials_penalty_not_the_papers():
  batch_size = 64
  stats = slopes.slope_statistics(np.full(3 * batch_size + 5, batch_size ** -0.5), batch_size=batch_size)
  assert len(stats["whole_batch_norms"]) == 3  # the 5 left over make no batch
  np.testing.assert_allclose(stats["whole_batch_norms"], 1.0)
  assert stats["whole_batch_penalty"] == pytest.approx(0.0, abs=1e-12)
  assert stats["per_example_penalty"] == pytest.approx((1 - 1 / 8) ** 2)
  assert stats["per_example"]["std"] == pytest.approx(0.0, abs=1e-12)
  assert stats["per_example"]["p50"] == pytest.approx(1 / 8)


@pytest.mark.parametrize("norms, batch_size", [(np.ones((4, 2)), 2), (np.ones(3), 4), (np.ones(3), 0)])
def test_norms_that_hold_no_batch_are_refused(norms, batch_size):
  with pytest.raises(ValueError, match="batch_size"):
    slopes.slope_statistics(norms, batch_size=batch_size)
