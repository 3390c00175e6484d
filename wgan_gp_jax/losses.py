"""Pure GAN losses and penalties that know nothing of Flax.

A critic is any callable ``critic_fn(x) -> scores`` taking a batch ``x`` of shape
``(N, ...)`` and returning one score per example, of shape ``(N,)`` or ``(N, 1)``.
The score of example ``i`` must depend on ``x[i]`` alone (no batch norm, no
minibatch statistics): penalties take the gradient of the summed scores, which is
then exactly the per-example input gradient ``grad_x D(x_i)``.

Every function works under ``jax.jit``, ``jax.vmap`` and ``jax.grad`` (second
order included) and on sharded inputs. Penalties are returned unweighted; the
``wgan_gp_critic_loss`` composite applies the weight.

Scores and input gradients of a lower precision (a critic computing in bfloat16)
are cast to float32 before anything is summed: losses, norms and penalties are
float32 (or float64 where the critic's are).
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp

CriticFn = Callable[[jax.Array], jax.Array]


def _check_floating(x: jax.Array, name: str) -> jax.Array:
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name} must have a floating dtype, got {x.dtype}.")
  return x


def _at_least_float32(x: jax.Array) -> jax.Array:
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_batch(x: jax.Array, name: str) -> jax.Array:
  x = _check_floating(x, name)
  if x.ndim < 1 or x.shape[0] == 0:
    raise ValueError(f"{name} must be a non-empty batch of shape (N, ...), got shape {x.shape}.")
  return x


def check_pair(real: jax.Array, fake: jax.Array) -> tuple[jax.Array, jax.Array]:
  real = _check_batch(real, "real")
  fake = _check_batch(fake, "fake")
  if real.shape != fake.shape:
    raise ValueError(f"real and fake must have the same shape, got {real.shape} and {fake.shape}.")
  return real, fake


def _as_scores(scores: jax.Array, name: str, batch_size: int | None = None) -> jax.Array:
  """Returns scores of shape (N,), accepting (N,) or (N, 1), in at least float32."""
  scores = _at_least_float32(_check_floating(scores, name))
  if scores.ndim == 2 and scores.shape[1] == 1:
    scores = scores[:, 0]
  if scores.ndim != 1:
    raise ValueError(f"{name} must have shape (N,) or (N, 1), one score per example; got {scores.shape}.")
  if batch_size is not None and scores.shape[0] != batch_size:
    raise ValueError(f"{name} has {scores.shape[0]} scores for a batch of {batch_size} examples.")
  return scores


def critic_scores(critic_fn: CriticFn, x: jax.Array) -> jax.Array:
  return _as_scores(critic_fn(x), "critic_fn(x)", batch_size=x.shape[0])


def per_example_norm(x: jax.Array) -> jax.Array:
  """Euclidean norm of each example over every non-batch axis, shape ``(N,)``, in at least float32.

  Differentiable everywhere: at an exactly zero example the value is 0 and the
  gradient 0 (a bare ``jnp.linalg.norm`` would give NaN gradients there).
  """
  squared = jnp.sum(jnp.square(_at_least_float32(x)), axis=tuple(range(1, x.ndim)))
  is_zero = squared == 0
  return jnp.where(is_zero, 0.0, jnp.sqrt(jnp.where(is_zero, 1.0, squared)))


def input_gradients(critic_fn: CriticFn, x: jax.Array) -> jax.Array:
  """``grad_x D(x_i)`` for every example, same shape as ``x``."""
  x = _check_batch(x, "x")
  return jax.grad(lambda inputs: jnp.sum(critic_scores(critic_fn, inputs)))(x)


def random_interpolates(real: jax.Array, fake: jax.Array, key: jax.Array) -> jax.Array:
  """``x_hat_i = t_i * real_i + (1 - t_i) * fake_i`` with one ``t_i ~ U[0, 1]`` per example."""
  real, fake = check_pair(real, fake)
  t = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1), dtype=real.dtype)
  return t * real + (1.0 - t) * fake


def _norm_penalty(norms: jax.Array, *, target: float, one_sided: bool) -> jax.Array:
  deviation = norms - target
  if one_sided:
    deviation = jnp.maximum(deviation, 0.0)
  return jnp.mean(jnp.square(deviation))


def gradient_penalty_and_norms(
    critic_fn: CriticFn,
    real: jax.Array,
    fake: jax.Array,
    key: jax.Array,
    *,
    target: float = 1.0,
    one_sided: bool = False,
) -> tuple[jax.Array, jax.Array]:
  """``gradient_penalty`` and the per-example gradient norms ``(N,)`` it was computed from."""
  interpolates = random_interpolates(real, fake, key)
  norms = per_example_norm(input_gradients(critic_fn, interpolates))
  return _norm_penalty(norms, target=target, one_sided=one_sided), norms


def gradient_penalty(
    critic_fn: CriticFn,
    real: jax.Array,
    fake: jax.Array,
    key: jax.Array,
    *,
    target: float = 1.0,
    one_sided: bool = False,
) -> jax.Array:
  r"""The WGAN-GP gradient penalty, per example and unweighted.

  .. math::
    \frac{1}{N} \sum_i \left(\lVert \nabla_x D(\hat x_i) \rVert_2 - c\right)^2,
    \qquad \hat x_i = t_i x^{real}_i + (1 - t_i) x^{fake}_i,\ t_i \sim U[0, 1],

  with one ``t_i`` per example broadcast over every non-batch axis and the norm
  taken per example over every non-batch axis (never one norm for the batch).
  With ``one_sided=True`` the term is ``max(0, ||.|| - c)^2``, the Lipschitz
  penalty of Petzka et al. Finite, with finite gradients, where the critic's
  input gradient is exactly zero.

  References:
    Gulrajani et al., `Improved Training of Wasserstein GANs
    <https://arxiv.org/abs/1704.00028>`_, 2017 (Algorithm 1).
    Petzka et al., `On the regularization of Wasserstein GANs
    <https://arxiv.org/abs/1709.08894>`_, 2018.

  Args:
    critic_fn: maps a batch ``(N, ...)`` to scores ``(N,)`` or ``(N, 1)``.
    real: real examples, shape ``(N, ...)``, floating.
    fake: generated examples, the same shape as ``real``.
    key: PRNG key for the interpolation coefficients.
    target: the gradient norm ``c`` the penalty pulls towards.
    one_sided: penalise only norms above ``target``.

  Returns:
    A scalar.
  """
  penalty, _ = gradient_penalty_and_norms(critic_fn, real, fake, key, target=target, one_sided=one_sided)
  return penalty


def wasserstein_critic_loss(real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
  r"""``mean D(fake) - mean D(real)``: the critic minimises the negated Wasserstein estimate.

  References:
    Arjovsky et al., `Wasserstein GAN <https://arxiv.org/abs/1701.07875>`_, 2017.
  """
  real_scores = _as_scores(real_scores, "real_scores")
  fake_scores = _as_scores(fake_scores, "fake_scores")
  return jnp.mean(fake_scores) - jnp.mean(real_scores)


def wasserstein_generator_loss(fake_scores: jax.Array) -> jax.Array:
  r"""``-mean D(fake)``, the generator loss of WGAN, WGAN-GP and hinge GANs.

  References:
    Arjovsky et al., `Wasserstein GAN <https://arxiv.org/abs/1701.07875>`_, 2017.
  """
  return -jnp.mean(_as_scores(fake_scores, "fake_scores"))


def critic_metrics(loss: jax.Array, real_scores: jax.Array, fake_scores: jax.Array) -> dict[str, jax.Array]:
  """The metrics every critic loss reports: ``critic_loss`` (``loss``), ``wasserstein_estimate`` (mean D(real) - mean
  D(fake)), ``real_score`` and ``fake_score`` (the means)."""
  return {
      "critic_loss": loss,
      "wasserstein_estimate": jnp.mean(real_scores) - jnp.mean(fake_scores),
      "real_score": jnp.mean(real_scores),
      "fake_score": jnp.mean(fake_scores),
  }


def wgan_gp_critic_loss(
    critic_fn: CriticFn,
    real: jax.Array,
    fake: jax.Array,
    key: jax.Array,
    *,
    gp_weight: float = 10.0,
    target: float = 1.0,
    one_sided: bool = False,
    drift_weight: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  r"""The WGAN-GP critic loss and its metrics.

  .. math::
    L = \mathbb{E}[D(\tilde x)] - \mathbb{E}[D(x)]
        + \lambda\, \mathrm{GP} + \epsilon_{drift} \mathbb{E}[D(x)^2]

  References:
    Gulrajani et al., `Improved Training of Wasserstein GANs
    <https://arxiv.org/abs/1704.00028>`_, 2017.

  Args:
    critic_fn: maps a batch ``(N, ...)`` to scores ``(N,)`` or ``(N, 1)``.
    real: real examples ``(N, ...)``.
    fake: generated examples, the same shape (stop their gradient yourself when
      the generator must not be updated).
    key: PRNG key for the interpolates.
    gp_weight: ``lambda``, 10 in the paper.
    target: see ``gradient_penalty``.
    one_sided: see ``gradient_penalty``.
    drift_weight: weight of ``drift_penalty`` (ProGAN uses 1e-3; 0 disables it).

  Returns:
    ``(loss, metrics)``: ``critic_metrics`` and ``gradient_penalty`` (unweighted) and ``gradient_norm`` (the mean
    per-example norm at the interpolates).
  """
  real, fake = check_pair(real, fake)
  scores = critic_scores(critic_fn, jnp.concatenate([real, fake], axis=0))
  real_scores, fake_scores = jnp.split(scores, 2)
  penalty, norms = gradient_penalty_and_norms(critic_fn, real, fake, key, target=target, one_sided=one_sided)
  loss = wasserstein_critic_loss(real_scores, fake_scores) + gp_weight * penalty
  if drift_weight:
    loss = loss + drift_weight * drift_penalty(real_scores)
  return loss, {**critic_metrics(loss, real_scores, fake_scores), "gradient_penalty": penalty,
                "gradient_norm": jnp.mean(norms)}


def _zero_centred_penalty(critic_fn: CriticFn, x: jax.Array) -> jax.Array:
  gradients = _at_least_float32(input_gradients(critic_fn, x))
  return jnp.mean(jnp.sum(jnp.square(gradients), axis=tuple(range(1, x.ndim))))


def r1_penalty(critic_fn: CriticFn, real: jax.Array) -> jax.Array:
  r"""Zero-centred penalty on real data, ``mean_i ||grad_x D(real_i)||^2`` (unweighted; usually ``gamma / 2`` times
  this).

  References:
    Mescheder et al., `Which Training Methods for GANs do actually Converge?
    <https://arxiv.org/abs/1801.04406>`_, 2018.
  """
  return _zero_centred_penalty(critic_fn, _check_batch(real, "real"))


def r2_penalty(critic_fn: CriticFn, fake: jax.Array) -> jax.Array:
  r"""Zero-centred penalty on generated data, ``mean_i ||grad_x D(fake_i)||^2`` (unweighted).

  References:
    Mescheder et al., `Which Training Methods for GANs do actually Converge?
    <https://arxiv.org/abs/1801.04406>`_, 2018.
  """
  return _zero_centred_penalty(critic_fn, _check_batch(fake, "fake"))


def dragan_penalty(
    critic_fn: CriticFn,
    real: jax.Array,
    key: jax.Array,
    *,
    perturbation_scale: float = 0.5,
    target: float = 1.0,
) -> jax.Array:
  r"""DRAGAN: the gradient-norm penalty around perturbed real data (unweighted).

  ``x_hat_i = x_i + t_i * delta_i`` with ``delta = perturbation_scale * std(x) * U[0, 1]``
  (elementwise, ``std`` over the whole batch) and one ``t_i ~ U[0, 1]`` per example,
  then ``mean_i (||grad_x D(x_hat_i)|| - target)^2``, as in the authors' code.

  References:
    Kodali et al., `On Convergence and Stability of GANs
    <https://arxiv.org/abs/1705.07215>`_, 2017.
  """
  real = _check_batch(real, "real")
  noise_key, interpolation_key = jax.random.split(key)
  perturbed = real + perturbation_scale * jnp.std(real) * jax.random.uniform(noise_key, real.shape, real.dtype)
  penalty, _ = gradient_penalty_and_norms(critic_fn, perturbed, real, interpolation_key, target=target)
  return penalty


def drift_penalty(real_scores: jax.Array) -> jax.Array:
  r"""``mean D(real)^2``, keeping critic scores near zero (unweighted; ProGAN uses ``eps = 1e-3``).

  References:
    Karras et al., `Progressive Growing of GANs <https://arxiv.org/abs/1710.10196>`_, 2018.
  """
  return jnp.mean(jnp.square(_as_scores(real_scores, "real_scores")))


def hinge_critic_loss(real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
  r"""``mean relu(1 - D(real)) + mean relu(1 + D(fake))``; the generator uses ``wasserstein_generator_loss``.

  References:
    Lim & Ye, `Geometric GAN <https://arxiv.org/abs/1705.02894>`_, 2017.
  """
  real_scores = _as_scores(real_scores, "real_scores")
  fake_scores = _as_scores(fake_scores, "fake_scores")
  return jnp.mean(jax.nn.relu(1.0 - real_scores)) + jnp.mean(jax.nn.relu(1.0 + fake_scores))


def non_saturating_critic_loss(real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
  r"""``-mean log sigmoid(D(real)) - mean log(1 - sigmoid(D(fake)))`` on logits, computed stably.

  References:
    Goodfellow et al., `Generative Adversarial Nets <https://arxiv.org/abs/1406.2661>`_, 2014.
  """
  real_scores = _as_scores(real_scores, "real_scores")
  fake_scores = _as_scores(fake_scores, "fake_scores")
  return jnp.mean(jax.nn.softplus(-real_scores)) + jnp.mean(jax.nn.softplus(fake_scores))


def non_saturating_generator_loss(fake_scores: jax.Array) -> jax.Array:
  r"""``-mean log sigmoid(D(fake))`` on logits, the generator loss that does not saturate.

  References:
    Goodfellow et al., `Generative Adversarial Nets <https://arxiv.org/abs/1406.2661>`_, 2014.
  """
  return jnp.mean(jax.nn.softplus(-_as_scores(fake_scores, "fake_scores")))


def least_squares_critic_loss(real_scores: jax.Array, fake_scores: jax.Array, *, real_target: float = 1.0,
                              fake_target: float = 0.0) -> jax.Array:
  r"""``0.5 * mean (D(real) - b)^2 + 0.5 * mean (D(fake) - a)^2``, the LSGAN critic loss, with ``b = real_target``
  and ``a = fake_target`` (the 0-1 coding ``a = 0, b = 1`` by default). The scores are not squashed.

  References:
    Mao et al., `Least Squares Generative Adversarial Networks <https://arxiv.org/abs/1611.04076>`_, 2017 (eq. 2).
  """
  real_scores = _as_scores(real_scores, "real_scores")
  fake_scores = _as_scores(fake_scores, "fake_scores")
  return 0.5 * jnp.mean(jnp.square(real_scores - real_target)) + 0.5 * jnp.mean(jnp.square(fake_scores - fake_target))


def least_squares_generator_loss(fake_scores: jax.Array, *, target: float = 1.0) -> jax.Array:
  r"""``0.5 * mean (D(fake) - c)^2``, the LSGAN generator loss, with ``c = target`` (1 in the 0-1 coding).

  References:
    Mao et al., `Least Squares Generative Adversarial Networks <https://arxiv.org/abs/1611.04076>`_, 2017 (eq. 2).
  """
  return 0.5 * jnp.mean(jnp.square(_as_scores(fake_scores, "fake_scores") - target))


def clip_weights(params: Any, clip_value: float) -> Any:
  """Every parameter clipped to ``[-clip_value, clip_value]``: the original WGAN's constraint on the critic, applied to
  the parameters after each optimizer update (a projection, exact to the last bit, unlike an optax update that
  would have to be added back to the parameters).

  References:
    Arjovsky et al., `Wasserstein GAN <https://arxiv.org/abs/1701.07875>`_, 2017 (c = 0.01).
  """
  if not clip_value > 0:
    raise ValueError(f"clip_value must be positive, got {clip_value}.")
  return jax.tree.map(lambda p: jnp.clip(p, -clip_value, clip_value), params)
