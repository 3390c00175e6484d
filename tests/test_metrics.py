"""FID (matrix square root, closed forms), KID, precision/recall and Inception Score."""

import numpy as np
import pytest
import scipy.linalg
import scipy.special
import scipy.stats

from wgan_gp_jax.metrics import fid, inception_score, kid, precision_recall


def _random_covariance(rng, d, n=None):
  a = rng.standard_normal((n or 2 * d, d))
  return a.T @ a / len(a)


# ---------------------------------------------------------------------------------------------
# Matrix square root and FID.

@pytest.mark.parametrize("n", [1, 7, 64, 150])  # 150 > block size: exercises the Sylvester step.
def test_sqrtm_of_covariance_product_matches_scipy_float64(n):
  rng = np.random.default_rng(n)
  a = _random_covariance(rng, n) @ _random_covariance(rng, n)
  ours = fid.sqrtm(a)
  reference = scipy.linalg.sqrtm(a)
  np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-10 * np.abs(reference).max())
  np.testing.assert_allclose(ours @ ours, a, rtol=0, atol=1e-10 * np.abs(a).max())


def test_sqrtm_of_general_real_and_complex_matrices_matches_scipy():
  rng = np.random.default_rng(0)
  g = rng.standard_normal((90, 90))  # Complex eigenvalue pairs: the rsf2csf path.
  np.testing.assert_allclose(fid.sqrtm(g), scipy.linalg.sqrtm(g), atol=1e-10)
  c = g + 1j * rng.standard_normal((90, 90))
  np.testing.assert_allclose(fid.sqrtm(c), scipy.linalg.sqrtm(c), atol=1e-10)


def test_sqrtm_of_singular_matrix_is_not_finite_and_of_bad_input_is_refused():
  assert not np.isfinite(fid.sqrtm(np.array([[0.0, 1.0], [0.0, 0.0]]))).all()
  with pytest.raises(ValueError, match="square"):
    fid.sqrtm(np.ones((2, 3)))


def test_gaussian_statistics_are_float64_mean_and_unbiased_covariance():
  x = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
  mu, sigma = fid.gaussian_statistics(x)
  assert mu.dtype == sigma.dtype == np.float64
  np.testing.assert_allclose(mu, x.astype(np.float64).mean(0), rtol=1e-12)
  np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-12)
  with pytest.raises(ValueError, match="N >= 2"):
    fid.gaussian_statistics(x[:1])


def test_fid_of_a_set_against_itself_is_zero():
  x = np.random.default_rng(1).standard_normal((3000, 64))
  assert abs(fid.fid_from_features(x, x)) < 1e-8


def test_fid_of_diagonal_gaussians_matches_closed_form():
  # Commuting covariances: d^2 = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
  rng = np.random.default_rng(2)
  mu1, mu2 = rng.standard_normal(10), rng.standard_normal(10)
  a, b = rng.uniform(0.1, 3.0, 10), rng.uniform(0.1, 3.0, 10)
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  assert fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_fid_of_full_gaussians_matches_symmetric_closed_form():
  # tr((S1 S2)^1/2) = tr((S1^1/2 S2 S1^1/2)^1/2), computed here by symmetric eigendecompositions.
  rng = np.random.default_rng(3)
  d = 40
  s1, s2 = _random_covariance(rng, d), _random_covariance(rng, d)
  mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
  w, v = np.linalg.eigh(s1)
  root1 = (v * np.sqrt(w)) @ v.T
  inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
  expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(inner))
  assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_fid_of_samples_approaches_the_population_value():
  rng = np.random.default_rng(4)
  d = 3
  s1, s2 = _random_covariance(rng, d), _random_covariance(rng, d)
  mu2 = np.full(d, 0.5)
  population = fid.frechet_distance(np.zeros(d), s1, mu2, s2)
  x = rng.multivariate_normal(np.zeros(d), s1, 200_000)
  y = rng.multivariate_normal(mu2, s2, 200_000)
  assert fid.fid_from_features(x, y) == pytest.approx(population, rel=0.02)


def test_fid_with_fewer_samples_than_dimensions_falls_back_to_eps_and_is_finite():
  rng = np.random.default_rng(5)
  x, y = rng.standard_normal((20, 50)), rng.standard_normal((20, 50)) + 0.1
  value = fid.fid_from_features(x, y)
  assert np.isfinite(value) and value > 0


def test_fid_refuses_covariance_whose_root_is_imaginary():
  with pytest.raises(ValueError, match="imaginary"):
    fid.frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
  with pytest.raises(ValueError, match="mismatched"):
    fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


# ---------------------------------------------------------------------------------------------
# KID.

def test_polynomial_kernel_matches_scikit_learn(import_or_missing):
  sklearn_pairwise = import_or_missing("sklearn.metrics.pairwise", reason="the reference kernel")
  rng = np.random.default_rng(6)
  x, y = rng.standard_normal((7, 5)), rng.standard_normal((9, 5))
  np.testing.assert_allclose(
    kid.polynomial_kernel(x, y),
    sklearn_pairwise.polynomial_kernel(x, y, degree=3, gamma=1 / 5, coef0=1), rtol=1e-12)


def test_mmd2_unbiased_matches_brute_force_sum():
  rng = np.random.default_rng(7)
  x, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 3)) + 1
  k = lambda a, b: (a @ b / 3 + 1) ** 3
  m = len(x)
  within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
  cross = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
  assert kid.mmd2_unbiased(x, y) == pytest.approx(within / (m * (m - 1)) - 2 * cross / m**2, rel=1e-12)


def test_kid_is_unbiased_on_equal_distributions_and_positive_on_different_ones():
  rng = np.random.default_rng(8)
  # Many small independent draws from one distribution: the unbiased estimate averages to 0 within
  # its standard error, while the biased V-statistic on the same draws sits many errors above 0.
  unbiased, biased = [], []
  for _ in range(2000):
    x, y = rng.standard_normal((20, 8)), rng.standard_normal((20, 8))
    unbiased.append(kid.mmd2_unbiased(x, y))
    k = kid.polynomial_kernel
    biased.append(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())
  unbiased, biased = np.array(unbiased), np.array(biased)
  assert abs(unbiased.mean()) < 4 * unbiased.std() / np.sqrt(len(unbiased))
  assert biased.mean() > 10 * biased.std() / np.sqrt(len(biased))
  same = kid.kernel_inception_distance(rng.standard_normal((500, 8)), rng.standard_normal((500, 8)),
                                       num_subsets=20, subset_size=200)
  shifted = kid.kernel_inception_distance(rng.standard_normal((500, 8)),
                                          rng.standard_normal((500, 8)) + 0.5,
                                          num_subsets=20, subset_size=200)
  assert abs(same["kid"]) < 3 * same["kid_std"]
  assert shifted["kid"] > 5 * shifted["kid_std"] > 0
  assert same["subset_size"] == 200 and same["num_subsets"] == 20


def test_kid_clips_subset_size_and_refuses_bad_shapes():
  rng = np.random.default_rng(9)
  out = kid.kernel_inception_distance(rng.standard_normal((30, 4)), rng.standard_normal((50, 4)),
                                      num_subsets=3)
  assert out["subset_size"] == 30
  with pytest.raises(ValueError, match="features"):
    kid.kernel_inception_distance(rng.standard_normal((30, 4)), rng.standard_normal((30, 5)))


# ---------------------------------------------------------------------------------------------
# Precision and recall.

def test_knn_radii_match_scikit_learn_nearest_neighbours(import_or_missing):
  neighbors = import_or_missing("sklearn.neighbors", reason="the reference nearest neighbours")
  x = np.random.default_rng(10).standard_normal((300, 6))
  dist, _ = neighbors.NearestNeighbors(n_neighbors=4).fit(x).kneighbors(x)
  np.testing.assert_allclose(precision_recall.knn_radii(x, k=3, batch_size=70), dist[:, 3], rtol=1e-9)


def test_precision_recall_analytic_cases():
  rng = np.random.default_rng(11)
  real = rng.standard_normal((400, 5))
  same = precision_recall.precision_recall(real, real.copy())
  assert same["precision"] == 1.0 and same["recall"] == 1.0
  far = precision_recall.precision_recall(real, real + 100.0)
  assert far["precision"] == 0.0 and far["recall"] == 0.0
  # Mode collapse: every fake lies on real points of one small region: precise, low recall.
  collapsed = real[np.argsort(np.linalg.norm(real, axis=1))[:20]]
  fake = collapsed[rng.integers(0, 20, 400)] + 1e-6 * rng.standard_normal((400, 5))
  result = precision_recall.precision_recall(real, fake)
  assert result["precision"] == 1.0 and result["recall"] < 0.2


def test_precision_recall_brute_force_on_small_sets():
  rng = np.random.default_rng(12)
  real, fake = rng.standard_normal((40, 2)), rng.standard_normal((30, 2)) * 1.5
  def coverage(q, m):
    d_mm = np.linalg.norm(m[:, None] - m[None], axis=-1)
    radii = np.sort(d_mm, axis=1)[:, 3]
    d_qm = np.linalg.norm(q[:, None] - m[None], axis=-1)
    return np.mean((d_qm <= radii[None]).any(1))
  result = precision_recall.precision_recall(real, fake)
  assert result["precision"] == pytest.approx(coverage(fake, real))
  assert result["recall"] == pytest.approx(coverage(real, fake))


# ---------------------------------------------------------------------------------------------
# Inception Score.

def test_inception_score_analytic_cases():
  assert inception_score.inception_score(np.zeros((100, 1008)), num_splits=1)["is"] == pytest.approx(1.0)
  # Confident predictions spread evenly over C classes: IS = C.
  logits = np.full((500, 1008), -1e4)
  logits[np.arange(500), np.arange(500) % 50] = 0.0
  out = inception_score.inception_score(logits, num_splits=10)
  assert out["is"] == pytest.approx(50.0) and out["is_std"] == pytest.approx(0.0, abs=1e-9)


def test_inception_score_matches_kl_formula():
  logits = np.random.default_rng(13).standard_normal((64, 10)) * 3
  p = scipy.special.softmax(logits, axis=1)
  marginal = p.mean(0)
  expected = np.exp(np.mean(scipy.stats.entropy(p, marginal[None].repeat(64, 0), axis=1)))
  assert inception_score.inception_score(logits, num_splits=1)["is"] == pytest.approx(expected, rel=1e-10)
  with pytest.raises(ValueError, match="num_splits"):
    inception_score.inception_score(logits[:5], num_splits=10)
