"""Objectives by name, optimizers by name, the generator EMA, and the compiled iteration against a plain loop written
from the papers' algorithms."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.configs import common
from wgan_gp_jax import configuration, losses, objectives, optimizers
from wgan_gp_jax import train as train_lib
from wgan_gp_jax.models import build_models

IMAGE_SHAPE = (8, 8, 3)


def _quadratic_critic(x):
  """A critic whose input gradient is known: ``D(x) = sum(a * x + x^2 / 2)``."""
  a = jnp.linspace(-1.0, 1.0, x[0].size).reshape(x.shape[1:])
  return jnp.sum(a * x + 0.5 * jnp.square(x), axis=tuple(range(1, x.ndim)))


def _batches():
  real = jax.random.normal(jax.random.key(1), (6,) + IMAGE_SHAPE)
  fake = jax.random.normal(jax.random.key(2), (6,) + IMAGE_SHAPE)
  return real, fake


def _objective(name: str, **overrides) -> objectives.Objective:
  group = configuration.override(configuration.default_config("image"), {"objective.name": name, **{
      f"objective.{key}": value for key, value in overrides.items()}}).objective
  return objectives.build_objective(group)


def _reference_losses(name, critic, real, fake, key):
  """Each objective's critic and generator loss composed by hand from ``losses``."""
  real_scores, fake_scores = critic(real), critic(fake)
  wasserstein = losses.wasserstein_critic_loss(real_scores, fake_scores)
  non_saturating = losses.non_saturating_critic_loss(real_scores, fake_scores)
  if name == "wgan_gp":
    critic_loss = wasserstein + 7.0 * losses.gradient_penalty(critic, real, fake, key)
  elif name == "wgan_lp":
    critic_loss = wasserstein + 7.0 * losses.gradient_penalty(critic, real, fake, key, one_sided=True)
  elif name == "wgan_gp_whole_batch":
    gradients = losses.input_gradients(critic, losses.random_interpolates(real, fake, key))
    critic_loss = wasserstein + 7.0 * (jnp.linalg.norm(gradients.ravel()) - 1.0) ** 2
  elif name in ("wgan_clip",):
    critic_loss = wasserstein
  elif name == "hinge":
    critic_loss = losses.hinge_critic_loss(real_scores, fake_scores)
  elif name == "ns":
    critic_loss = non_saturating
  elif name == "lsgan":
    critic_loss = losses.least_squares_critic_loss(real_scores, fake_scores)
  elif name == "ns_r1":
    critic_loss = non_saturating + 0.5 * 3.0 * losses.r1_penalty(critic, real)
  elif name == "dragan":
    critic_loss = non_saturating + 5.0 * losses.dragan_penalty(critic, real, key)
  else:
    raise AssertionError(name)
  if name in ("ns", "ns_r1", "dragan"):
    generator_loss = losses.non_saturating_generator_loss(fake_scores)
  elif name == "lsgan":
    generator_loss = losses.least_squares_generator_loss(fake_scores)
  else:
    generator_loss = losses.wasserstein_generator_loss(fake_scores)
  return critic_loss, generator_loss


@pytest.mark.parametrize("name", sorted(objectives.OBJECTIVES))
def test_each_objective_equals_the_functions_of_losses(name):
  objective = _objective(name, gp_weight=7.0, r1_gamma=3.0, dragan_weight=5.0)
  real, fake = _batches()
  key = jax.random.key(3)
  critic_loss, metrics = jax.jit(objective.critic_loss, static_argnums=0)(_quadratic_critic, real, fake, key)
  expected_critic, expected_generator = _reference_losses(name, _quadratic_critic, real, fake, key)
  # The Wasserstein terms are differences of two means of scores near 100: float32 rounds them to about 1e-5.
  np.testing.assert_allclose(critic_loss, expected_critic, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(metrics["critic_loss"], expected_critic, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(objective.generator_loss(_quadratic_critic(fake)), expected_generator, rtol=1e-6)
  np.testing.assert_allclose(metrics["wasserstein_estimate"],
                             jnp.mean(_quadratic_critic(real)) - jnp.mean(_quadratic_critic(fake)), rtol=1e-5,
                             atol=1e-4)


# Scores [0, 1, -1]: softplus(0) = log 2, softplus(-1) = log(1 + 1/e), softplus(1) = log(1 + e).
_SCORES = np.array([0.0, 1.0, -1.0], np.float32)
_SOFTPLUS = {0.0: np.log(2.0), -1.0: np.log1p(np.exp(-1.0)), 1.0: np.log1p(np.e)}


@pytest.mark.parametrize("name, critic_loss, generator_loss", [
    # critic: mean softplus(-D(real)) + mean softplus(D(fake)); generator: mean softplus(-D(fake)).
    ("ns", (_SOFTPLUS[0.0] + _SOFTPLUS[-1.0] + _SOFTPLUS[1.0]) / 3 + (_SOFTPLUS[0.0] + _SOFTPLUS[1.0]
                                                                      + _SOFTPLUS[-1.0]) / 3,
     (_SOFTPLUS[0.0] + _SOFTPLUS[-1.0] + _SOFTPLUS[1.0]) / 3),
    # critic: 0.5 mean (D(real) - 1)^2 + 0.5 mean D(fake)^2 = 0.5 * 5/3 + 0.5 * 2/3; generator: 0.5 * 5/3.
    ("lsgan", 7.0 / 6.0, 5.0 / 6.0),
])
def test_ns_and_lsgan_equal_their_formulas_on_hand_computed_scores(name, critic_loss, generator_loss):
  objective = _objective(name)
  scores_of = lambda x: x[:, 0]  # the critic returns its input: real and fake scores are both [0, 1, -1]
  batch = jnp.asarray(_SCORES)[:, None]
  loss, metrics = jax.jit(objective.critic_loss, static_argnums=0)(scores_of, batch, batch, jax.random.key(0))
  np.testing.assert_allclose(loss, critic_loss, rtol=1e-6)
  np.testing.assert_allclose(metrics["critic_loss"], critic_loss, rtol=1e-6)
  np.testing.assert_allclose(jax.jit(objective.generator_loss)(jnp.asarray(_SCORES)), generator_loss, rtol=1e-6)
  assert objective.allows_critic_batch_norm and objective.critic_constraint is None


def test_least_squares_losses_take_their_targets_and_refuse_bad_shapes():
  scores = jnp.asarray(_SCORES)
  # Targets a, b, c of Mao et al.: the critic pulls real towards b and fake towards a, the generator fake towards c.
  np.testing.assert_allclose(losses.least_squares_critic_loss(scores, scores, real_target=0.0, fake_target=-1.0),
                             0.5 * 2 / 3 + 0.5 * 5 / 3, rtol=1e-6)
  np.testing.assert_allclose(losses.least_squares_generator_loss(scores, target=0.0), 0.5 * 2 / 3, rtol=1e-6)
  np.testing.assert_allclose(losses.least_squares_generator_loss(scores[:, None]), 5 / 6, rtol=1e-6)
  with pytest.raises(ValueError, match="shape"):
    losses.least_squares_critic_loss(jnp.zeros((3, 2)), jnp.zeros(3))
  with pytest.raises(ValueError, match="shape"):
    losses.least_squares_generator_loss(jnp.zeros((3, 2)))


def test_objectives_that_allow_a_batch_norm_critic_score_real_and_fake_in_separate_passes():
  # A critic that scores each example against its batch's mean: one pass over [real; fake] would mix them.
  critic = lambda x: jnp.sum(x - jnp.mean(x, axis=0), axis=(1, 2, 3))
  real, fake = _batches()
  for name in objectives.OBJECTIVES:
    objective = _objective(name)
    if not objective.allows_critic_batch_norm:
      continue
    _, metrics = objective.critic_loss(critic, real, fake + 3.0, jax.random.key(0))
    np.testing.assert_allclose(metrics["real_score"], 0.0, atol=1e-4)
    np.testing.assert_allclose(metrics["fake_score"], 0.0, atol=1e-4)
  assert {name for name in objectives.OBJECTIVES if _objective(name).allows_critic_batch_norm} == {
      "wgan_clip", "ns", "lsgan"}


def test_robustness_settings_are_the_papers_appendix_e():
  settings = objectives.ROBUSTNESS_SETTINGS
  assert list(settings) == ["wgan_gp", "wgan_clip", "ns", "lsgan"]
  expected = {  # (optimizer, learning rate, b1, b2, n_critic) of both networks
      "wgan_gp": ("adam", 1e-4, 0.5, 0.9, 5), "wgan_clip": ("rmsprop", 5e-5, None, None, 5),
      "ns": ("adam", 2e-4, 0.5, 0.999, 1), "lsgan": ("rmsprop", 1e-4, None, None, 1)}
  for name, (optimizer, learning_rate, b1, b2, n_critic) in expected.items():
    config = configuration.override(_image_config(**{"objective.name": name}), settings[name])
    configuration.validate(config)
    assert config.n_critic == n_critic
    for group in (config.critic, config.generator):
      assert (group.name, group.learning_rate) == (optimizer, learning_rate)
      if optimizer == "adam":
        assert (group.b1, group.b2) == (b1, b2)
  assert objectives.objective_settings("ns")["critic.b2"] == 0.999  # DCGAN's own paper, for experiments.compare


def test_a_renamed_objective_is_built_under_its_former_name():
  for former, current in objectives.RENAMED.items():
    assert former not in objectives.OBJECTIVES and current in objectives.OBJECTIVES
    assert _objective(former).name == current
  with pytest.raises(ValueError, match="unknown objective.name 'wgan_gp_batchnom'; did you mean"):
    _objective("wgan_gp_batchnom")


def test_the_tutorials_whole_batch_penalty_differs_from_the_papers():
  # D(x) = ||x||^2 / 2 has gradient x: per example the norms are ||x_i||, for the whole batch one norm ||x||_F.
  x = jax.random.normal(jax.random.key(0), (5,) + IMAGE_SHAPE) * jnp.arange(1.0, 6.0)[:, None, None, None] / 10
  critic = lambda x: 0.5 * jnp.sum(jnp.square(x), axis=(1, 2, 3))
  tutorial, one_norm = objectives.tutorial_whole_batch_gradient_penalty(critic, x, x, jax.random.key(1))
  np.testing.assert_allclose(one_norm, np.linalg.norm(np.asarray(x)), rtol=1e-6)
  np.testing.assert_allclose(tutorial, (np.linalg.norm(np.asarray(x)) - 1) ** 2, rtol=1e-5)
  assert abs(float(tutorial) - float(losses.gradient_penalty(critic, x, x, jax.random.key(1)))) > 0.1


def _image_config(**overrides):
  config = configuration.default_config("image")
  small = {"model.width": 4, "model.latent_dim": 8, "data.resolution": 8, "batch_size": 4, "n_critic": 2,
           "num_steps": 10}
  return configuration.override(config, {**small, **overrides})


def _init_state(config, models):
  parts = configuration.training_parts(config)
  return train_lib.init_state(models, parts.optimizers, seed=config.seed, ema=parts.ema is not None)


def _critic_update(config, models):
  parts = configuration.training_parts(config)
  return train_lib.make_critic_update(models, parts.objective, parts.optimizers.critic,
                                      augmentation=parts.augmentation)


def _train_iteration(config, models):
  parts = configuration.training_parts(config)
  return train_lib.make_train_iteration(models, parts.objective, parts.optimizers, n_critic=config.n_critic,
                                        augmentation=parts.augmentation, ema=parts.ema)


def _real(config, seed=0):
  shape = (config.n_critic, config.batch_size, config.data.resolution, config.data.resolution, 3)
  return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, shape), jnp.float32)


def test_weight_clipping_keeps_every_critic_weight_within_c_after_an_update():
  # A large learning rate would take most weights far outside [-c, c] without the clipping.
  config = _image_config(**{"objective.name": "wgan_clip", "objective.clip": 0.01, "critic.name": "rmsprop",
                            "critic.learning_rate": 0.5})
  models = build_models(config)
  state = _init_state(config, models)
  assert max(float(jnp.max(jnp.abs(w))) for w in jax.tree.leaves(state.critic_params)) > 0.01
  update = jax.jit(_critic_update(config, models))
  params, _, _ = update(state, state.critic_params, state.critic_opt_state, _real(config)[0], jax.random.key(0))
  leaves = jax.tree.leaves(params)
  assert max(float(jnp.max(jnp.abs(w))) for w in leaves) <= 0.01
  assert sum(int(jnp.sum(jnp.abs(w) == 0.01)) for w in leaves) > 0  # the clipping was needed


def _small_critic_config(name: str):
  return _image_config(**{"objective.name": name, "model.width": 8, "data.resolution": 16, "batch_size": 8})


def _critic_update_flops(name: str) -> float:
  config = _small_critic_config(name)
  models = build_models(config)
  state = jax.eval_shape(lambda: _init_state(config, models))
  real = jax.ShapeDtypeStruct((config.batch_size, 16, 16, 3), jnp.float32)
  key = jax.eval_shape(lambda: jax.random.key(0))
  compiled = jax.jit(_critic_update(config, models)).lower(
      state, state.critic_params, state.critic_opt_state, real, key).compile()
  return compiled.cost_analysis()["flops"]


def _first_order_critic_gradient_flops() -> float:
  """The work of a critic update without any penalty: fakes, the critic on real and fake, its weight gradient."""
  config = _small_critic_config("wgan_clip")
  models = build_models(config)
  state = jax.eval_shape(lambda: _init_state(config, models))

  def gradient(state, real, z):
    fake, _ = train_lib.generate(models, state.generator_params, state.generator_batch_stats, z, train=True)
    loss = lambda p: jnp.mean(models.critic.apply({"params": p}, fake)) - jnp.mean(
        models.critic.apply({"params": p}, real))
    return jax.grad(loss)(state.critic_params)

  real = jax.ShapeDtypeStruct((config.batch_size, 16, 16, 3), jnp.float32)
  z = jax.ShapeDtypeStruct((config.batch_size, models.latent_dim), jnp.float32)
  return jax.jit(gradient).lower(state, real, z).compile().cost_analysis()["flops"]


def test_objectives_without_an_input_gradient_penalty_compile_no_second_order_gradient(products_only):
  # XLA's cost analysis counts the matrix products' FLOPs, not those of oneDNN's custom calls.
  flops = {name: _critic_update_flops(name) for name in ("wgan_gp", "wgan_clip", "hinge", "ns_r1")}
  first_order = _first_order_critic_gradient_flops()
  for name in ("wgan_clip", "hinge"):  # the first-order gradient and the optimizer's elementwise work, nothing more
    assert flops[name] < 1.05 * first_order, (flops, first_order)
  for name in ("wgan_gp", "ns_r1"):  # an input gradient and its weight gradient: a second-order program
    assert flops[name] > 1.4 * first_order, (flops, first_order)


def _plain_loop(config, models, state, real_batches, iterations):
  """Algorithm 1 for any objective of the registry, with DiffAugment and the generator EMA, as a plain eager loop: no
  scan, no jit, optax optimizers of its own, the critic's loss of the paper's Algorithm 1 written out for wgan_gp and
  wgan_clip (Arjovsky et al.'s) and the other objectives' losses as the objective gives them (they are checked
  against ``losses`` above), the library's keys (``train_lib.stream_key``; the augmentations' keys folded in as
  ``train_lib._AUGMENT_REAL`` and ``_AUGMENT_FAKE``). Augmented real and fake batches reach the critic's loss (and so
  its penalty's interpolates) and the generator's; the EMA follows StyleGAN2-ADA's formula, its batch-norm statistics
  those of its own forward pass on the update's latents."""
  parts = configuration.training_parts(config)
  objective, augmentation, ema = parts.objective, parts.augmentation, parts.ema

  def optimizer(group):
    if group.name == "rmsprop":
      return optax.rmsprop(group.learning_rate, decay=group.decay, eps=group.eps)
    if group.name == "sgd":
      return optax.sgd(group.learning_rate, momentum=group.momentum or None)
    return optax.adam(group.learning_rate, b1=group.b1, b2=group.b2)

  critic_tx, generator_tx = optimizer(config.critic), optimizer(config.generator)
  w, theta, stats = state.critic_params, state.generator_params, state.generator_batch_stats
  ema_theta, ema_stats = state.ema_params, state.ema_batch_stats
  critic_state, generator_state = critic_tx.init(w), generator_tx.init(theta)

  def D(params):
    return lambda x: models.critic.apply({"params": params}, x)

  def G(params, batch_stats, z):
    fake, new = models.generator.apply({"params": params, "batch_stats": batch_stats}, z, train=True,
                                       mutable=["batch_stats"])
    return fake, new["batch_stats"]

  def critic_loss(w, x, x_tilde, penalty_key):
    if config.objective.name not in ("wgan_gp", "wgan_clip"):
      return objective.critic_loss(D(w), x, x_tilde, penalty_key)[0]
    loss = jnp.mean(D(w)(x_tilde)) - jnp.mean(D(w)(x))
    if config.objective.name == "wgan_clip":
      return loss
    eps = jax.random.uniform(penalty_key, (x.shape[0], 1, 1, 1))
    x_hat = eps * x + (1 - eps) * x_tilde
    gradient = jax.grad(lambda x_hat: jnp.sum(D(w)(x_hat)))(x_hat)
    norms = jnp.sqrt(jnp.sum(jnp.square(gradient.astype(jnp.float32)), axis=(1, 2, 3)))
    return loss + config.objective.gp_weight * jnp.mean(jnp.square(norms - 1))

  for step in range(iterations):
    step_key = train_lib.stream_key(state.key, train_lib.Stream.TRAIN, step)
    for t in range(config.n_critic):
      key = jax.random.fold_in(step_key, t)
      z_key, penalty_key = jax.random.split(key)
      x = real_batches[step][t]
      x_tilde = G(theta, stats, jax.random.normal(z_key, (x.shape[0], models.latent_dim)))[0]
      if augmentation is not None:
        x = augmentation(x, jax.random.fold_in(key, train_lib._AUGMENT_REAL))
        x_tilde = augmentation(x_tilde, jax.random.fold_in(key, train_lib._AUGMENT_FAKE))
      gradient = jax.grad(critic_loss)(w, x, x_tilde, penalty_key)
      updates, critic_state = critic_tx.update(gradient, critic_state, w)
      w = optax.apply_updates(w, updates)
      if objective.critic_constraint is not None:
        w = jax.tree.map(lambda v: jnp.clip(v, -config.objective.clip, config.objective.clip), w)
    key = jax.random.fold_in(step_key, config.n_critic)
    z = jax.random.normal(key, (config.batch_size, models.latent_dim))

    def generator_loss(theta):
      fake, new_stats = G(theta, stats, z)
      if augmentation is not None:
        fake = augmentation(fake, jax.random.fold_in(key, train_lib._AUGMENT_FAKE))
      return objective.generator_loss(D(w)(fake)), new_stats

    gradient, new_stats = jax.grad(generator_loss, has_aux=True)(theta)
    updates, generator_state = generator_tx.update(gradient, generator_state, theta)
    theta, stats = optax.apply_updates(theta, updates), new_stats
    if ema is not None:
      images = step * config.batch_size  # before this update
      half_life = min(config.ema.half_life_kimg * 1000.0, images * config.ema.rampup)
      beta = 0.5 ** (config.batch_size / max(half_life, 1e-8))
      ema_theta = jax.tree.map(lambda average, new: beta * average + (1 - beta) * new, ema_theta, theta)
      ema_stats = G(ema_theta, ema_stats, z)[1]
  return w, theta, stats, ema_theta, ema_stats


# Every objective in float32; in bfloat16 the recipe's objective and one of each other kind (the suite's time).
@pytest.mark.parametrize("name, dtype", [(name, "float32") for name in sorted(objectives.OBJECTIVES)] + [
    (name, "bfloat16") for name in ("wgan_gp", "wgan_clip", "ns")])
def test_compiled_iteration_with_ema_diffaugment_and_bfloat16_equals_a_plain_loop(name, dtype):
  # In bfloat16 the eager loop rounds between operations where the compiled one fuses them: differences of a rounding
  # that Adam's and RMSProp's normalised steps would blow up to a whole step, so bfloat16 is compared under SGD.
  optimizer = objectives.RECOMMENDED_OPTIMIZERS.get(name, {}) if dtype == "float32" else {
      "critic.name": "sgd", "generator.name": "sgd", "critic.learning_rate": 0.05, "generator.learning_rate": 0.1}
  config = _image_config(**{
      "objective.name": name, "model.dtype": dtype, "augment.policy": "color,translation,cutout",
      "ema.enabled": True, "ema.half_life_kimg": 0.01, **optimizer,
      **({"critic.learning_rate": 1e-3, "generator.learning_rate": 2e-3} if dtype == "float32" else {})})
  models = build_models(config)
  initial = _init_state(config, models)
  real = [_real(config, seed) for seed in range(3)]
  iteration = jax.jit(_train_iteration(config, models))
  state = initial
  for batch in real:
    state, _ = iteration(state, batch)
  plain = _plain_loop(config, models, initial, real, len(real))
  ours = (state.critic_params, state.generator_params, state.generator_batch_stats, state.ema_params,
          state.ema_batch_stats)
  starts = (initial.critic_params, initial.generator_params, initial.generator_batch_stats, initial.ema_params,
            initial.ema_batch_stats)
  for tree, plain_tree, start in zip(ours, plain, starts, strict=True):
    if dtype == "float32":
      for (path, a), b in zip(jax.tree.leaves_with_path(tree), jax.tree.leaves(plain_tree), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5, err_msg=jax.tree_util.keystr(path))
    else:
      # Roundings apart, not a wiring: the two differ by a small part of how far training moved the tree (at most 6%
      # here, where leaving the real batches unaugmented in the critic's update puts them 58% apart).
      apart = optax.tree.norm(jax.tree.map(jnp.subtract, tree, plain_tree))
      moved = optax.tree.norm(jax.tree.map(jnp.subtract, tree, start))
      assert apart < 0.15 * moved, (float(apart), float(moved))
  for before, after in ((initial.generator_params, state.generator_params), (initial.ema_params, state.ema_params)):
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(before)))
    assert moved > 1e-4


def test_the_augmentation_reaches_the_critics_loss():
  """A sentinel: the same state, batch and key, with and without DiffAugment, give different critic metrics."""
  metrics = {}
  for policy in ("", "color,translation,cutout"):
    config = _image_config(**{"augment.policy": policy})
    models = build_models(config)
    state = _init_state(config, models)
    update = jax.jit(_critic_update(config, models))
    metrics[policy] = update(state, state.critic_params, state.critic_opt_state, _real(config)[0],
                             jax.random.key(0))[2]
  for key in ("real_score", "fake_score", "gradient_penalty"):
    assert not np.isclose(metrics[""][key], metrics["color,translation,cutout"][key], rtol=1e-4), key


def test_separate_optimizers_and_learning_rates_for_critic_and_generator():
  config = _image_config(**{"critic.name": "sgd", "critic.learning_rate": 0.1, "generator.name": "rmsprop",
                            "generator.learning_rate": 1e-3})
  built = optimizers.build_optimizers(config)
  generator_tx, critic_tx = built.generator, built.critic
  params = {"w": jnp.ones(3)}
  gradient = {"w": jnp.array([1.0, -2.0, 0.5])}
  critic_step, _ = critic_tx.update(gradient, critic_tx.init(params), params)
  np.testing.assert_allclose(critic_step["w"], -0.1 * gradient["w"], rtol=1e-6)
  generator_step, _ = generator_tx.update(gradient, generator_tx.init(params), params)
  # RMSProp's first step: -lr * g / sqrt((1 - decay) * g^2 + eps) = -lr * sign(g) / sqrt(1 - decay).
  np.testing.assert_allclose(generator_step["w"], -1e-3 * jnp.sign(gradient["w"]) / np.sqrt(0.01), rtol=1e-4)


@pytest.mark.parametrize("decay_start", [0.0, 0.6])
def test_linear_decay_holds_until_its_start_and_reaches_zero_at_the_end_of_each_networks_updates(decay_start):
  config = _image_config(**{"critic.name": "sgd", "critic.linear_decay": True, "generator.name": "sgd",
                            "generator.linear_decay": True, "num_steps": 10, "n_critic": 2,
                            "critic.decay_start": decay_start, "generator.decay_start": decay_start})
  built = optimizers.build_optimizers(config)
  generator_tx, critic_tx = built.generator, built.critic
  params, gradient = {"w": jnp.zeros(())}, {"w": jnp.ones(())}
  for tx, updates, lr in ((generator_tx, 10, config.generator.learning_rate),
                          (critic_tx, 20, config.critic.learning_rate)):
    opt_state = tx.init(params)
    steps = []
    for _ in range(updates + 1):
      step, opt_state = tx.update(gradient, opt_state, params)
      steps.append(-float(step["w"]))
    decay_begins = int(decay_start * updates)  # 0 or 6 of 10 generator updates, 0 or 12 of 20 critic updates
    np.testing.assert_allclose(steps[:decay_begins + 1], lr, rtol=1e-6)
    midpoint = (decay_begins + updates) // 2
    np.testing.assert_allclose(steps[midpoint], lr * (updates - midpoint) / (updates - decay_begins), rtol=1e-5)
    assert steps[updates] == 0.0


def test_decay_start_outside_zero_to_one_is_refused_naming_its_group():
  config = _image_config(**{"generator.linear_decay": True, "generator.decay_start": 1.0})
  with pytest.raises(ValueError, match=r"generator\.decay_start must be in \[0.0, 1.0\), got 1.0"):
    optimizers.build_optimizers(config)


def test_ema_with_half_life_zero_is_the_raw_generator():
  config = configuration.override(common.toy_config("8gaussians"), {
      "model.width": 16, "batch_size": 16, "ema.enabled": True, "ema.half_life_kimg": 0.0})
  models = build_models(config)
  state = _init_state(config, models)
  iteration = jax.jit(_train_iteration(config, models))
  for step in range(3):
    state, _ = iteration(state, jax.random.normal(jax.random.key(step), (config.n_critic, 16, 2)))
  for ema, raw in zip(jax.tree.leaves(state.ema_params), jax.tree.leaves(state.generator_params), strict=True):
    np.testing.assert_array_equal(ema, raw)


def test_ema_ramp_up_follows_its_formula_and_the_average_is_exact():
  config = _image_config(**{"ema.enabled": True, "ema.half_life_kimg": 0.1, "ema.rampup": 0.5, "batch_size": 4})
  parts = configuration.training_parts(config)
  ema = parts.ema
  assert ema == train_lib.EMA(half_life_kimg=0.1, rampup=0.5)
  batch = 4
  # Half-life min(100, step * 4 * 0.5) images; beta = 0.5 ** (4 / half-life).
  for step, half_life in ((0, 0.0), (1, 2.0), (10, 20.0), (49, 98.0), (50, 100.0), (1000, 100.0)):
    expected = 0.5 ** (batch / half_life) if half_life else 0.0
    np.testing.assert_allclose(ema.beta(step=step, batch_size=batch), expected, rtol=1e-6)
  no_rampup = train_lib.EMA(half_life_kimg=0.1, rampup=0.0)
  np.testing.assert_allclose(no_rampup.beta(step=0, batch_size=batch), 0.5 ** (4 / 100), rtol=1e-6)

  models = build_models(config)
  state = _init_state(config, models).replace(step=jnp.asarray(7, jnp.int32))
  state = state.replace(ema_params=jax.tree.map(lambda p: p + 1.0, state.ema_params))  # an average apart from the raw
  generator_update = train_lib.make_generator_update(models, parts.objective, parts.optimizers.generator, ema=ema)
  updated, metrics = jax.jit(generator_update, static_argnums=2)(
      state, jax.random.key(0), batch)
  beta = 0.5 ** (batch / (7 * batch * 0.5))
  np.testing.assert_allclose(metrics["ema_beta"], beta, rtol=1e-6)
  for ema, old, new in zip(jax.tree.leaves(updated.ema_params), jax.tree.leaves(state.ema_params),
                           jax.tree.leaves(updated.generator_params), strict=True):
    np.testing.assert_allclose(ema, beta * old + (1 - beta) * new, rtol=1e-5, atol=1e-6)
  # The EMA generator's batch-norm statistics are its own: they moved, and differ from the raw generator's.
  for ema_stats, start, raw in zip(jax.tree.leaves(updated.ema_batch_stats), jax.tree.leaves(state.ema_batch_stats),
                                   jax.tree.leaves(updated.generator_batch_stats), strict=True):
    assert not np.array_equal(ema_stats, start) and not np.array_equal(ema_stats, raw)


def test_runs_sample_from_the_ema_by_default(tmp_path):
  from wgan_gp_jax.runner import experiment
  config = configuration.override(common.toy_config("8gaussians"), {
      "model.width": 16, "batch_size": 16, "num_steps": 4, "checkpoint.every": 4, "logging.figure_every": 10**6,
      "ema.enabled": True, "ema.half_life_kimg": 1.0})
  experiment.train_and_evaluate(config, tmp_path)
  ema_run, raw_run = experiment.load_run(tmp_path), experiment.load_run(tmp_path, use_ema=False)
  assert ema_run.samples_from_ema and not raw_run.samples_from_ema
  z = ema_run.latents(8, seed=0)
  expected = ema_run.models.generator.apply({"params": ema_run.state.ema_params}, z, train=False)
  np.testing.assert_allclose(ema_run.generate(z), expected, rtol=1e-6)
  assert not np.allclose(ema_run.generate(z), raw_run.generate(z))
