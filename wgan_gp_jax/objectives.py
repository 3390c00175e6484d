"""GAN objectives by name: each is the critic's loss with its regulariser, the generator's loss and, for the original
WGAN, a constraint on the critic's weights, all composed from the pure functions of ``losses``.

Chosen by ``config.objective.name`` (the ``objective`` config group holds every objective's hyperparameters; each
objective reads its own). Add one by writing its builder and registering it in ``OBJECTIVES``; the training loop needs
no change. Another project can also build an ``Objective`` of its own and hand it to ``train.make_train_iteration``.
Objectives without an input-gradient penalty never compute one, so their critic step has no double backward.

References:
  Gulrajani et al., `Improved Training of Wasserstein GANs <https://arxiv.org/abs/1704.00028>`_, 2017.
  Kurach et al., `A Large-Scale Study on Regularization and Normalization in GANs
  <https://arxiv.org/abs/1807.04720>`_, 2019 (compare_gan: losses and penalties chosen by name).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any, Callable, Mapping

import jax
import jax.numpy as jnp

from wgan_gp_jax import losses
from wgan_gp_jax.names import unknown_name_message

if TYPE_CHECKING:  # the core needs no ml_collections: any object with the config's attributes will do
  import ml_collections

Metrics = dict[str, jax.Array]
# (critic_fn, real, fake, key) -> (loss, metrics); ``fake`` carries no gradient to the generator here.
CriticLoss = Callable[[losses.CriticFn, jax.Array, jax.Array, jax.Array], tuple[jax.Array, Metrics]]
# scores of the generator's samples (N,) -> loss
GeneratorLoss = Callable[[jax.Array], jax.Array]
# (critic_fn, real, fake, key, real_scores) -> (weighted penalty, metrics of the unweighted penalty)
Regulariser = Callable[[losses.CriticFn, jax.Array, jax.Array, jax.Array, jax.Array], tuple[jax.Array, Metrics]]


@dataclasses.dataclass(frozen=True)
class Objective:
  """A GAN objective: pure functions the training step composes.

  Build one directly to train with an objective of your own (``train.make_train_iteration`` takes any), or by name
  from a config group with ``build_objective``.

  Attributes:
    name: what it is called (its name in ``OBJECTIVES`` for those built by name).
    critic_loss: ``(critic_fn, real, fake, key) -> (loss, metrics)``, regulariser included; ``metrics`` always has
      ``critic_loss``, ``wasserstein_estimate`` (mean D(real) - mean D(fake)), ``real_score`` and ``fake_score``.
    generator_loss: ``fake_scores -> loss``.
    critic_constraint: ``params -> params``, applied after every critic optimizer update (weight clipping), or None.
    allows_critic_batch_norm: whether a critic that normalises with batch statistics may train under it: True only
      where ``critic_loss`` has no input-gradient penalty (which needs each example's score to depend on that example
      alone) and scores the real and the fake batch in separate passes (so batch statistics never mix them, as in
      the DCGAN, LSGAN and WGAN papers' code). ``models.build_models`` refuses ``model.critic_norm="batch"`` where it
      is False.
  """
  name: str
  critic_loss: CriticLoss
  generator_loss: GeneratorLoss
  critic_constraint: Callable[[Any], Any] | None = None
  allows_critic_batch_norm: bool = False


def _regularised(score_loss: Callable[[jax.Array, jax.Array], jax.Array],
                 regulariser: Regulariser | None = None, *, separate_passes: bool = False) -> CriticLoss:
  """A critic loss of the scores of one pass over ``[real; fake]`` (with ``separate_passes``, one pass over each), plus
  a regulariser."""

  def critic_loss(critic_fn, real, fake, key):
    real, fake = losses.check_pair(real, fake)
    if separate_passes:
      real_scores, fake_scores = losses.critic_scores(critic_fn, real), losses.critic_scores(critic_fn, fake)
    else:
      scores = losses.critic_scores(critic_fn, jnp.concatenate([real, fake], axis=0))
      real_scores, fake_scores = jnp.split(scores, 2)
    loss = score_loss(real_scores, fake_scores)
    penalty_metrics = {}
    if regulariser is not None:
      penalty, penalty_metrics = regulariser(critic_fn, real, fake, key, real_scores)
      loss = loss + penalty
    return loss, {**losses.critic_metrics(loss, real_scores, fake_scores), **penalty_metrics}

  return critic_loss


def tutorial_whole_batch_gradient_penalty(critic_fn: losses.CriticFn, real: jax.Array, fake: jax.Array,
                                          key: jax.Array) -> tuple[jax.Array, jax.Array]:
  r"""THE TF2 TUTORIAL'S MISTAKE, kept only to measure what it costs: ``(||grad||_F - 1)^2`` with ONE norm taken over
  the whole batch's gradient ``(N, ...)``, as ``tf.norm(gradients)`` does, instead of one norm per example.

  With N examples whose gradients all have norm 1 its norm is ``sqrt(N)``, so it pulls each example's gradient norm
  towards ``1 / sqrt(N)``, and lets one example's large gradient hide behind the others' small ones. Use
  ``losses.gradient_penalty`` (per example), never this. Returns ``(penalty, the batch's one norm)``.
  """
  gradients = losses.input_gradients(critic_fn, losses.random_interpolates(real, fake, key))
  one_norm = losses.per_example_norm(gradients.reshape(1, -1))
  return jnp.mean(jnp.square(one_norm - 1.0)), one_norm[0]


def wgan_gp(config: ml_collections.ConfigDict, *, one_sided: bool = False) -> Objective:
  """WGAN-GP (Gulrajani et al. 2017): ``losses.wgan_gp_critic_loss``, per-example penalty, weight ``gp_weight``."""

  def critic_loss(critic_fn, real, fake, key):
    return losses.wgan_gp_critic_loss(critic_fn, real, fake, key, gp_weight=config.gp_weight, one_sided=one_sided,
                                      drift_weight=config.drift_weight)

  return Objective("wgan_lp" if one_sided else "wgan_gp", critic_loss, losses.wasserstein_generator_loss)


def wgan_lp(config: ml_collections.ConfigDict) -> Objective:
  """WGAN-LP (Petzka et al. 2018): the one-sided penalty ``max(0, ||grad|| - 1)^2``, weight ``gp_weight``."""
  return wgan_gp(config, one_sided=True)


def wgan_gp_whole_batch(config: ml_collections.ConfigDict) -> Objective:
  """The TF2 tutorial's WGAN-GP: one gradient norm for the whole batch (``tutorial_whole_batch_gradient_penalty``).

  Wrong; here only so that ``experiments.compare`` can show what the mistake costs.
  """

  def regulariser(critic_fn, real, fake, key, real_scores):
    del real_scores
    penalty, one_norm = tutorial_whole_batch_gradient_penalty(critic_fn, real, fake, key)
    return config.gp_weight * penalty, {"gradient_penalty": penalty, "batch_gradient_norm": one_norm}

  return Objective("wgan_gp_whole_batch", _regularised(losses.wasserstein_critic_loss, regulariser),
                   losses.wasserstein_generator_loss)


def wgan_clip(config: ml_collections.ConfigDict) -> Objective:
  """The original WGAN (Arjovsky et al. 2017): no penalty; every critic weight clipped to ``[-clip, clip]`` after each
  update (``losses.clip_weights``). Its paper trains with RMSProp at lr 5e-5 (``RECOMMENDED_OPTIMIZERS``). The real
  and the fake batch are scored in separate passes, as in its authors' code, so a batch-norm critic may train under
  it."""
  return Objective("wgan_clip", _regularised(losses.wasserstein_critic_loss, separate_passes=True),
                   losses.wasserstein_generator_loss,
                   critic_constraint=functools.partial(losses.clip_weights, clip_value=config.clip),
                   allows_critic_batch_norm=True)


def hinge(config: ml_collections.ConfigDict) -> Objective:
  """The hinge loss (Lim & Ye 2017; SAGAN, BigGAN), no penalty."""
  del config
  return Objective("hinge", _regularised(losses.hinge_critic_loss), losses.wasserstein_generator_loss)


def ns(config: ml_collections.ConfigDict) -> Objective:
  """The original GAN's non-saturating loss with no regulariser, as DCGAN trains it (Goodfellow et al. 2014; Radford
  et al. 2016): ``losses.non_saturating_critic_loss`` and ``losses.non_saturating_generator_loss`` on logits. The
  real and the fake batch are scored in separate passes, so a batch-norm critic may train under it."""
  del config
  return Objective("ns", _regularised(losses.non_saturating_critic_loss, separate_passes=True),
                   losses.non_saturating_generator_loss, allows_critic_batch_norm=True)


def lsgan(config: ml_collections.ConfigDict) -> Objective:
  """The least-squares GAN (Mao et al. 2017) in its 0-1 coding, no regulariser: ``losses.least_squares_critic_loss``
  and ``losses.least_squares_generator_loss``. The real and the fake batch are scored in separate passes, so a
  batch-norm critic may train under it."""
  del config
  return Objective("lsgan", _regularised(losses.least_squares_critic_loss, separate_passes=True),
                   losses.least_squares_generator_loss, allows_critic_batch_norm=True)


def ns_r1(config: ml_collections.ConfigDict) -> Objective:
  """The non-saturating GAN with ``r1_gamma / 2`` times R1 on the real data (Mescheder et al. 2018)."""

  def regulariser(critic_fn, real, fake, key, real_scores):
    del fake, key, real_scores
    penalty = losses.r1_penalty(critic_fn, real)
    return 0.5 * config.r1_gamma * penalty, {"r1_penalty": penalty}

  return Objective("ns_r1", _regularised(losses.non_saturating_critic_loss, regulariser),
                   losses.non_saturating_generator_loss)


def dragan(config: ml_collections.ConfigDict) -> Objective:
  """DRAGAN (Kodali et al. 2017): the non-saturating GAN with ``dragan_weight`` times ``losses.dragan_penalty``."""

  def regulariser(critic_fn, real, fake, key, real_scores):
    del fake, real_scores
    penalty = losses.dragan_penalty(critic_fn, real, key)
    return config.dragan_weight * penalty, {"dragan_penalty": penalty}

  return Objective("dragan", _regularised(losses.non_saturating_critic_loss, regulariser),
                   losses.non_saturating_generator_loss)


OBJECTIVES: Mapping[str, Callable[[ml_collections.ConfigDict], Objective]] = {
    "wgan_gp": wgan_gp,
    "wgan_lp": wgan_lp,
    "wgan_gp_whole_batch": wgan_gp_whole_batch,
    "wgan_clip": wgan_clip,
    "hinge": hinge,
    "ns": ns,
    "lsgan": lsgan,
    "ns_r1": ns_r1,
    "dragan": dragan,
}

# Former names of objectives, accepted wherever a name is read (configs and checkpoints made before the renaming).
RENAMED: Mapping[str, str] = {"wgan_gp_batchnorm": "wgan_gp_whole_batch"}

# Optimizer settings of an objective's own paper, where they differ from the paper of WGAN-GP's Adam(1e-4, 0, 0.9):
# ``experiments.compare`` trains each objective with these (dotted config keys).
RECOMMENDED_OPTIMIZERS: Mapping[str, Mapping[str, object]] = {
    # Arjovsky et al. (2017), Algorithm 1: RMSProp, lr 5e-5, for both networks ("momentum based methods such as Adam
    # ... cause instability"), n_critic 5.
    "wgan_clip": {"critic.name": "rmsprop", "critic.learning_rate": 5e-5, "critic.momentum": 0.0,
                  "generator.name": "rmsprop", "generator.learning_rate": 5e-5, "generator.momentum": 0.0},
    # Radford et al. (2016), DCGAN: Adam, lr 2e-4, beta1 0.5 (beta2 TensorFlow's default, 0.999).
    "ns": {"critic.name": "adam", "critic.learning_rate": 2e-4, "critic.b1": 0.5, "critic.b2": 0.999,
           "generator.name": "adam", "generator.learning_rate": 2e-4, "generator.b1": 0.5, "generator.b2": 0.999},
}


def _both_networks(**settings: object) -> dict[str, object]:
  return {f"{network}.{key}": value for network in ("critic", "generator") for key, value in settings.items()}


# The settings of the WGAN-GP paper's architecture-robustness experiment (Gulrajani et al. 2017, section 5.2, Figure
# 2), "the hyperparameters recommended in each method's paper" as its Appendix E lists them, one set per objective for
# every architecture, with the critic updates per generator update of the authors' gan_64x64.py (5 for the WGANs, 1
# for DCGAN and LSGAN). Appendix E gives WGAN-GP Adam's beta1 as 0.5 (gan_64x64.py has 0). The RMSProp of
# gan_64x64.py is TensorFlow's (decay 0.9, epsilon 1e-10 inside the square root). ``experiments.architecture_grid``
# trains every architecture with these.
ROBUSTNESS_SETTINGS: Mapping[str, Mapping[str, object]] = {
    "wgan_gp": {"n_critic": 5, "objective.gp_weight": 10.0,
                **_both_networks(name="adam", learning_rate=1e-4, b1=0.5, b2=0.9)},
    "wgan_clip": {"n_critic": 5, "objective.clip": 0.01,
                  **_both_networks(name="rmsprop", learning_rate=5e-5, decay=0.9, eps=1e-10, momentum=0.0)},
    "ns": {"n_critic": 1, **_both_networks(name="adam", learning_rate=2e-4, b1=0.5, b2=0.999)},
    "lsgan": {"n_critic": 1, **_both_networks(name="rmsprop", learning_rate=1e-4, decay=0.9, eps=1e-10, momentum=0.0)},
}


def objective_settings(name: str, *, paper_optimizer: bool = True) -> dict[str, object]:
  """The config settings (dotted keys) that select objective ``name``, with its paper's optimizer where it has one."""
  settings: dict[str, object] = {"objective.name": name}
  if paper_optimizer:
    settings.update(RECOMMENDED_OPTIMIZERS.get(name, {}))
  return settings


def build_objective(config: ml_collections.ConfigDict) -> Objective:
  """The objective ``config.name`` (or its former name, ``RENAMED``) with the hyperparameters of the ``objective``
  config group ``config``; raises ``ValueError`` naming the key of a value that cannot make one."""
  name = RENAMED.get(config.name, config.name)
  if name not in OBJECTIVES:
    raise ValueError(unknown_name_message("objective.name", config.name, list(OBJECTIVES)))
  for key in ("gp_weight", "drift_weight", "r1_gamma", "dragan_weight"):
    if key in config and not config[key] >= 0:
      raise ValueError(f"objective.{key} must be >= 0, got {config[key]}")
  if "clip" in config and not config.clip > 0:
    raise ValueError(f"objective.clip must be positive, got {config.clip}")
  return OBJECTIVES[name](config)
