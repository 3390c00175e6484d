import functools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from wgan_gp_jax import losses


def _images(key, n=6, shape=(4, 4, 3), dtype=jnp.float32):
  return jax.random.normal(key, (n,) + shape, dtype)


def _linear_critic(w):
  return lambda x: jnp.tensordot(x, w, axes=w.ndim)


@pytest.mark.parametrize("use_jit", [False, True])
def test_linear_critic_gives_exactly_norm_of_w_minus_one_squared(use_jit):
  w = jax.random.normal(jax.random.key(0), (4, 4, 3))
  real, fake = _images(jax.random.key(1)), _images(jax.random.key(2))
  penalty = functools.partial(losses.gradient_penalty, _linear_critic(w))
  if use_jit:
    penalty = jax.jit(penalty)
  expected = (jnp.linalg.norm(w.ravel()) - 1.0) ** 2
  np.testing.assert_allclose(penalty(real, fake, jax.random.key(3)), expected, rtol=1e-5)


def test_quadratic_critic_norm_is_per_example_not_per_batch():
  # f(x) = ||x||^2 / 2 has gradient x; with real == fake the interpolate is x itself.
  x = _images(jax.random.key(0), n=5) * jnp.arange(1.0, 6.0)[:, None, None, None]
  critic = lambda x: 0.5 * jnp.sum(jnp.square(x), axis=(1, 2, 3))
  penalty = losses.gradient_penalty(critic, x, x, jax.random.key(1))
  per_example = np.mean((np.linalg.norm(np.asarray(x).reshape(5, -1), axis=1) - 1.0) ** 2)
  whole_batch = (np.linalg.norm(np.asarray(x)) - 1.0) ** 2  # the TF tutorial's mistake
  np.testing.assert_allclose(penalty, per_example, rtol=1e-5)
  assert abs(float(penalty) - whole_batch) > 1.0


def test_scores_of_shape_n_by_1_are_accepted():
  w = jnp.ones((3,))
  x = jnp.ones((4, 3))
  critic = lambda x: (x @ w)[:, None]
  np.testing.assert_allclose(losses.gradient_penalty(critic, x, 2 * x, jax.random.key(0)), (np.sqrt(3) - 1) ** 2,
                             rtol=1e-6)


def test_bfloat16_scores_and_input_gradients_are_summed_in_float32():
  # A bfloat16 critic on bfloat16 batches: bfloat16 scores and input gradients, float32 losses and penalties.
  w = jax.random.normal(jax.random.key(0), (4, 4, 3), jnp.bfloat16)
  critic = lambda x: jnp.sum(jnp.tanh(x * w), axis=(1, 2, 3))
  # The same critic computed in float32, at the same interpolates.
  in_float32 = lambda x: jnp.sum(jnp.tanh(x.astype(jnp.float32) * w.astype(jnp.float32)), axis=(1, 2, 3))
  real, fake = (_images(jax.random.key(k), n=64, dtype=jnp.bfloat16) for k in (1, 2))

  @jax.jit
  def losses_of(real, fake):
    return [(*losses.wgan_gp_critic_loss(fn, real, fake, jax.random.key(3), drift_weight=1e-3),
             losses.r1_penalty(fn, real)) for fn in (critic, in_float32)]

  (loss, metrics, r1), (reference_loss, reference_metrics, _) = losses_of(real, fake)
  assert {value.dtype for value in [loss, r1, *metrics.values()]} == {jnp.dtype(jnp.float32)}
  np.testing.assert_allclose(metrics["gradient_penalty"], reference_metrics["gradient_penalty"], rtol=2e-2)
  np.testing.assert_allclose(loss, reference_loss, rtol=2e-2)


def test_constant_critic_has_finite_penalty_and_finite_gradients():
  x = _images(jax.random.key(0))

  def loss(params):
    # ReLU far below zero: the input gradient is exactly 0 everywhere.
    critic = lambda x: jax.nn.relu(jnp.tensordot(x, params["w"], axes=3) - 1e6) + params["b"]
    return losses.wgan_gp_critic_loss(critic, x, x + 1, jax.random.key(1))[0]

  params = {"w": jnp.ones((4, 4, 3)), "b": jnp.array(0.5)}
  value, grads = jax.value_and_grad(loss)(params)
  np.testing.assert_allclose(value, 10.0)  # the Wasserstein terms cancel; the penalty is (0 - 1)^2
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert np.isfinite(losses.per_example_norm(jnp.zeros((2, 3)))).all()
  np.testing.assert_array_equal(jax.grad(lambda g: losses.per_example_norm(g).sum())(jnp.zeros((2, 3))), 0.0)


def test_one_sided_penalty_ignores_norms_below_target():
  real, fake = jnp.zeros((4, 2)), jnp.ones((4, 2))
  small = _linear_critic(jnp.array([0.3, 0.4]))  # norm 0.5
  large = _linear_critic(jnp.array([1.2, 1.6]))  # norm 2
  key = jax.random.key(0)
  assert losses.gradient_penalty(small, real, fake, key, one_sided=True) == 0.0
  np.testing.assert_allclose(losses.gradient_penalty(small, real, fake, key), 0.25, rtol=1e-6)
  np.testing.assert_allclose(losses.gradient_penalty(large, real, fake, key, one_sided=True), 1.0, rtol=1e-6)
  np.testing.assert_allclose(losses.gradient_penalty(large, real, fake, key, target=2.0), 0.0, atol=1e-10)


def test_interpolates_use_one_coefficient_per_example():
  real, fake = _images(jax.random.key(0), n=64), _images(jax.random.key(1), n=64)
  x_hat, real, fake = (np.asarray(a, np.float64).reshape(64, -1) for a in (
      losses.random_interpolates(real, fake, jax.random.key(2)), real, fake))
  # Each example's coefficient, read where real and fake differ most (elsewhere the division amplifies rounding)...
  widest = np.argmax(np.abs(real - fake), axis=1)
  rows = np.arange(64)
  coefficients = (x_hat[rows, widest] - fake[rows, widest]) / (real[rows, widest] - fake[rows, widest])
  # ...makes every pixel of the example: one coefficient per example, not per pixel.
  np.testing.assert_allclose(x_hat, coefficients[:, None] * real + (1 - coefficients[:, None]) * fake, atol=1e-6)
  assert coefficients.min() >= 0.0 and coefficients.max() <= 1.0
  assert np.std(coefficients) > 0.15  # distinct across examples (U[0,1] has std 0.29)


def _mlp_critic(params, x):
  h = jnp.tanh(x.reshape(x.shape[0], -1) @ params["w1"] + params["b1"])
  return (h @ params["w2"])[:, 0]


def test_critic_loss_parameter_gradients_match_central_finite_differences():
  with jax.enable_x64(True):
    key = jax.random.key(0)
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    params = {"w1": jax.random.normal(k1, (6, 5), jnp.float64) * 0.7,
              "b1": jax.random.normal(k2, (5,), jnp.float64) * 0.1,
              "w2": jax.random.normal(k3, (5, 1), jnp.float64)}
    real = jax.random.normal(k4, (8, 3, 2), jnp.float64)
    fake = jax.random.normal(k5, (8, 3, 2), jnp.float64) + 1.0

    def loss(p):
      return losses.wgan_gp_critic_loss(functools.partial(_mlp_critic, p), real, fake, jax.random.key(7))[0]

    flat, unravel = jax.flatten_util.ravel_pytree(params)
    analytic = jax.flatten_util.ravel_pytree(jax.grad(loss)(params))[0]
    eps = 1e-6
    numeric = np.array([
        (loss(unravel(flat.at[i].add(eps))) - loss(unravel(flat.at[i].add(-eps)))) / (2 * eps)
        for i in range(flat.size)])
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_critic_loss_under_jit_equals_eager_and_reports_metrics():
  params = {"w1": jax.random.normal(jax.random.key(1), (6, 5)), "b1": jnp.zeros(5),
            "w2": jax.random.normal(jax.random.key(2), (5, 1))}
  real, fake = jax.random.normal(jax.random.key(3), (8, 6)), jax.random.normal(jax.random.key(4), (8, 6))
  fn = lambda p, r, f, k: losses.wgan_gp_critic_loss(functools.partial(_mlp_critic, p), r, f, k, gp_weight=10.0)
  eager_loss, eager_metrics = fn(params, real, fake, jax.random.key(5))
  jit_loss, jit_metrics = jax.jit(fn)(params, real, fake, jax.random.key(5))
  np.testing.assert_allclose(jit_loss, eager_loss, rtol=1e-5)
  for name in eager_metrics:
    np.testing.assert_allclose(jit_metrics[name], eager_metrics[name], rtol=1e-5, atol=1e-6)
  real_scores, fake_scores = _mlp_critic(params, real), _mlp_critic(params, fake)
  np.testing.assert_allclose(eager_metrics["wasserstein_estimate"], real_scores.mean() - fake_scores.mean(),
                             rtol=1e-5)
  np.testing.assert_allclose(
      eager_loss, fake_scores.mean() - real_scores.mean() + 10.0 * eager_metrics["gradient_penalty"], rtol=1e-5)
  assert set(eager_metrics) >= {"wasserstein_estimate", "gradient_penalty", "gradient_norm"}


def test_penalty_vmaps_over_independent_problems():
  w = jax.random.normal(jax.random.key(0), (3, 4))  # three linear critics
  real = jax.random.normal(jax.random.key(1), (3, 5, 4))
  fake = jax.random.normal(jax.random.key(2), (3, 5, 4))
  keys = jax.random.split(jax.random.key(3), 3)
  penalties = jax.vmap(lambda w, r, f, k: losses.gradient_penalty(lambda x: x @ w, r, f, k))(w, real, fake, keys)
  np.testing.assert_allclose(penalties, (np.linalg.norm(w, axis=1) - 1) ** 2, rtol=1e-5)


@pytest.mark.parametrize("call, message", [
    (lambda: losses.gradient_penalty(lambda x: x.sum(1), jnp.ones((4, 3)), jnp.ones((4, 2)), jax.random.key(0)),
     "same shape"),
    (lambda: losses.gradient_penalty(lambda x: x.sum(1), jnp.ones((4, 3), jnp.int32), jnp.ones((4, 3), jnp.int32),
                                     jax.random.key(0)), "floating"),
    (lambda: losses.gradient_penalty(lambda x: x, jnp.ones((4, 3)), jnp.ones((4, 3)), jax.random.key(0)),
     r"\(N,\) or \(N, 1\)"),
    (lambda: losses.gradient_penalty(lambda x: x.sum(), jnp.ones((4, 3)), jnp.ones((4, 3)), jax.random.key(0)),
     r"\(N,\) or \(N, 1\)"),
    (lambda: losses.gradient_penalty(lambda x: x[:2].sum(1), jnp.ones((4, 3)), jnp.ones((4, 3)), jax.random.key(0)),
     "2 scores for a batch of 4"),
    (lambda: losses.wasserstein_critic_loss(jnp.ones((4, 2)), jnp.ones(4)), "real_scores"),
    (lambda: losses.wasserstein_generator_loss(jnp.ones(4, jnp.int32)), "floating"),
    (lambda: losses.r1_penalty(lambda x: x.sum(1), jnp.ones((0, 3))), "non-empty"),
    (lambda: losses.clip_weights({}, 0.0), "positive"),
])
def test_bad_input_raises_a_value_error_naming_the_problem(call, message):
  with pytest.raises(ValueError, match=message):
    call()


def test_r1_r2_and_dragan_on_a_linear_critic():
  w = jnp.array([0.6, 0.8, 2.0])  # squared norm 5
  x = jax.random.normal(jax.random.key(0), (7, 3))
  critic = _linear_critic(w)
  np.testing.assert_allclose(losses.r1_penalty(critic, x), 5.0, rtol=1e-6)
  np.testing.assert_allclose(losses.r2_penalty(critic, x), 5.0, rtol=1e-6)
  np.testing.assert_allclose(losses.dragan_penalty(critic, x, jax.random.key(1)), (np.sqrt(5) - 1) ** 2, rtol=1e-6)
  quadratic = lambda x: 0.5 * jnp.sum(x**2, axis=1)
  np.testing.assert_allclose(losses.r1_penalty(quadratic, x), np.mean(np.sum(np.asarray(x) ** 2, 1)), rtol=1e-5)


def test_dragan_perturbs_around_real_data_only():
  real = jax.random.normal(jax.random.key(0), (16, 3))
  quadratic = lambda x: 0.5 * jnp.sum(x**2, axis=1)  # gradient = x: the penalty sees the points it is taken at
  no_perturbation = losses.dragan_penalty(quadratic, real, jax.random.key(1), perturbation_scale=0.0)
  np.testing.assert_allclose(no_perturbation, np.mean((np.linalg.norm(real, axis=1) - 1) ** 2), rtol=1e-5)
  assert losses.dragan_penalty(quadratic, real, jax.random.key(1)) != no_perturbation


def test_score_losses_analytic_values():
  real, fake = jnp.array([2.0, 0.5, -1.0]), jnp.array([-2.0, 0.0, 1.0])
  np.testing.assert_allclose(losses.wasserstein_critic_loss(real, fake), fake.mean() - real.mean(), rtol=1e-6)
  np.testing.assert_allclose(losses.wasserstein_generator_loss(fake[:, None]), -fake.mean(), rtol=1e-6)
  np.testing.assert_allclose(losses.hinge_critic_loss(real, fake), (0 + 0.5 + 2) / 3 + (0 + 1 + 2) / 3, rtol=1e-6)
  sigmoid = lambda s: 1 / (1 + np.exp(-np.asarray(s)))
  np.testing.assert_allclose(losses.non_saturating_critic_loss(real, fake),
                             -np.mean(np.log(sigmoid(real))) - np.mean(np.log(1 - sigmoid(fake))), rtol=1e-5)
  np.testing.assert_allclose(losses.non_saturating_generator_loss(fake), -np.mean(np.log(sigmoid(fake))), rtol=1e-5)
  np.testing.assert_allclose(losses.drift_penalty(real), np.mean(np.asarray(real) ** 2), rtol=1e-6)
  # Stable for large logits, where a naive log(sigmoid) overflows.
  assert np.isfinite(losses.non_saturating_critic_loss(jnp.array([-1e4]), jnp.array([1e4])))


def test_drift_weight_adds_the_drift_penalty():
  real, fake = jnp.ones((4, 2)), jnp.zeros((4, 2))
  critic = _linear_critic(jnp.array([3.0, 4.0]))  # D(real) = 7, gradient norm 5
  loss, _ = losses.wgan_gp_critic_loss(critic, real, fake, jax.random.key(0), gp_weight=1.0, drift_weight=0.5)
  np.testing.assert_allclose(loss, (0 - 7) + 1.0 * 16 + 0.5 * 49, rtol=1e-6)


def test_clip_weights_is_exactly_within_range():
  params = {"w": jnp.array([0.005, -0.0100001, 0.3]), "b": jnp.array([-2.0])}
  clipped = jax.jit(losses.clip_weights, static_argnums=1)(params, 0.01)
  np.testing.assert_array_equal(clipped["w"], np.array([0.005, -0.01, 0.01], np.float32))
  np.testing.assert_array_equal(clipped["b"], np.array([-0.01], np.float32))
