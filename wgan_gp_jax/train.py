"""The training state and one compiled GAN iteration: ``n_critic`` critic updates, then one generator update (and
its EMA).

The iteration is made of values built once: the models, an ``objectives.Objective`` (one of ``objectives`` or a
project's own), the two networks' optax optimizers (``optimizers.Optimizers``), an optional augmentation
``(x, key) -> x`` and an optional ``EMA``. Nothing here reads a config: the runner builds these parts from one
(``configuration.training_parts``), and another project may build them itself.

A run is a pure function of its parts and its seed: every random number is drawn from
the run's root key by ``fold_in`` of a ``Stream`` and of the generator step held in the state (and of
the critic step within the iteration), so a resumed run draws the same numbers.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from wgan_gp_jax import augment, objectives
from wgan_gp_jax.models import Models, conditional
from wgan_gp_jax.optimizers import Optimizers


class Stream(enum.IntEnum):
  """The independent random streams of a run, folded by number out of its root key (``stream_key``)."""
  TRAIN = 0  # each iteration's latents, penalty points and augmentations
  DATA = 1  # toy runs' training data
  INIT = 2  # the initial parameters
  SAMPLE = 3  # the fixed latents of the pictures drawn while training


Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  """Everything a run's future depends on, as one pytree."""
  step: jax.Array  # generator iterations done, int32 scalar
  key: jax.Array  # the run's root key as raw uint32 key data
  generator_params: Any
  generator_batch_stats: Any
  critic_params: Any
  generator_opt_state: optax.OptState
  critic_opt_state: optax.OptState
  # The generator's exponential moving average and its own batch-norm statistics; {} for a run without EMA.
  ema_params: Any
  ema_batch_stats: Any


def root_key(seed: int) -> jax.Array:
  return jax.random.key(seed)


def stream_key(state_key: jax.Array, stream: Stream, step: jax.Array | int) -> jax.Array:
  """The key of ``stream`` at generator step ``step``, from the raw root key data."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(state_key), int(stream)), step)


def init_state(models: Models, optimizers: Optimizers, *, seed: int, ema: bool) -> TrainState:
  """The initial state of a run, a pure function of its models, optimizers and seed; with ``ema``, the EMA starts as
  a copy of the generator (its parameters and batch-norm statistics)."""
  key = jax.random.key_data(root_key(seed))
  generator_key, critic_key = jax.random.split(stream_key(key, Stream.INIT, 0))
  z = jnp.zeros((1, models.latent_dim), jnp.float32)
  condition = {"labels": jnp.zeros((1,), jnp.int32)} if models.num_classes else {}
  generator_variables = models.generator.init(generator_key, z, train=False, **condition)
  critic_variables = models.critic.init(critic_key, jnp.zeros((1,) + models.sample_shape, jnp.float32))
  generator_params = generator_variables["params"]
  generator_batch_stats = generator_variables.get("batch_stats", {})
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      key=key,
      generator_params=generator_params,
      generator_batch_stats=generator_batch_stats,
      critic_params=critic_variables["params"],
      generator_opt_state=optimizers.generator.init(generator_params),
      critic_opt_state=optimizers.critic.init(critic_variables["params"]),
      ema_params=jax.tree.map(jnp.copy, generator_params) if ema else {},
      ema_batch_stats=jax.tree.map(jnp.copy, generator_batch_stats) if ema else {},
  )


def generate(models: Models, params: Any, batch_stats: Any, z: jax.Array, *, train: bool,
             labels: jax.Array | None = None) -> tuple[jax.Array, Any]:
  """Generator samples and, in training mode, the updated batch-norm statistics; ``labels`` (int ``(N,)``): the
  classes a class-conditional generator (``models.num_classes > 0``) makes, and only such a generator takes them."""
  if (labels is not None) != bool(models.num_classes):
    raise ValueError(f"labels are for class-conditional generators: models.num_classes={models.num_classes}, labels"
                     f" {'given' if labels is not None else 'missing'}")
  variables = {"params": params, "batch_stats": batch_stats}
  condition = {} if labels is None else {"labels": labels}
  if not train:
    return models.generator.apply(variables, z, train=False, **condition), batch_stats
  samples, updates = models.generator.apply(variables, z, train=True, mutable=["batch_stats"], **condition)
  return samples, updates.get("batch_stats", {})


def critic_fn(models: Models, critic_params: Any) -> Callable[[jax.Array], jax.Array]:
  return functools.partial(models.critic.apply, {"params": critic_params})


@dataclasses.dataclass(frozen=True)
class EMA:
  """The generator's exponential moving average (StyleGAN2-ADA's ``training_loop.py``).

  Attributes:
    half_life_kimg: the average's half-life in thousands of generator images, >= 0 (0: the EMA is the raw
      generator).
    rampup: while > 0, the half-life is capped at ``rampup`` times the images seen so far; <= 0: no ramp-up.
  """
  half_life_kimg: float
  rampup: float

  def __post_init__(self):
    if not self.half_life_kimg >= 0:
      raise ValueError(f"ema.half_life_kimg must be >= 0, got {self.half_life_kimg}")

  def beta(self, *, step: jax.Array | int, batch_size: int) -> jax.Array:
    """The decay of the update after ``step`` generator steps of ``batch_size`` images.

    ``0.5 ** (batch_size / half_life)``, the half-life being ``half_life_kimg * 1000`` generator images, capped at
    ``rampup * step * batch_size`` (the images seen so far) while ``rampup > 0``: the average forgets its random start
    quickly. A half-life of 0 gives ``beta = 0``: the EMA is the raw generator.
    """
    half_life = jnp.asarray(self.half_life_kimg * 1000.0, jnp.float32)
    if self.rampup > 0:
      half_life = jnp.minimum(half_life, jnp.asarray(step, jnp.float32) * batch_size * self.rampup)
    return 0.5 ** (batch_size / jnp.maximum(half_life, 1e-8))


def _latent_sampler(models: Models, batch_sharding: NamedSharding | None) -> Callable[[jax.Array, int], jax.Array]:
  def latent(key: jax.Array, batch_size: int) -> jax.Array:
    z = jax.random.normal(key, (batch_size, models.latent_dim), jnp.float32)
    if batch_sharding is not None:
      z = jax.lax.with_sharding_constraint(z, batch_sharding)
    return z
  return latent


# fold_in constants of the augmentation keys and of the generator update's labels, apart from the splits that draw
# latents and penalty points.
_AUGMENT_REAL, _AUGMENT_FAKE, _GENERATOR_LABELS = 1, 2, 3


@dataclasses.dataclass(frozen=True)
class ClassConditioning:
  """The AC-GAN terms of a class-conditional run (Odena et al. 2017, as Gulrajani et al. use them): the critic's loss
  adds ``critic_scale`` times its classifier's cross-entropy on the real images, the generator's adds
  ``generator_scale`` times that on its samples. The critic's fakes are made with the real batch's labels; the
  generator update draws its labels uniformly. The objective's loss, and its gradient penalty, see the scores only.
  The models must be class-conditional with ``num_classes`` classes (``models.conditional``)."""
  num_classes: int
  critic_scale: float = 1.0
  generator_scale: float = 0.1


def _classifier_terms(outputs: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(scores, cross-entropy of the class logits against labels, accuracy)`` of a classifying critic's outputs."""
  scores, logits = conditional.split_outputs(outputs)
  cross_entropy = jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels))
  accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
  return scores, cross_entropy, accuracy


def make_critic_update(
    models: Models,
    objective: objectives.Objective,
    critic_optimizer: optax.GradientTransformation,
    *,
    augmentation: augment.Augmentation | None = None,
    conditioning: ClassConditioning | None = None,
    batch_sharding: NamedSharding | None = None,
) -> Callable[..., tuple[Any, optax.OptState, Metrics]]:
  """One critic update, ``(state, critic_params, critic_opt_state, real_batch, key) -> (critic_params,
  critic_opt_state, metrics)``: a step of ``critic_optimizer`` on ``objective.critic_loss``, then
  ``objective.critic_constraint`` where it has one.

  The fakes come from ``state``'s generator (training-mode batch norm, its
  statistics discarded); ``key`` draws their latents, the penalty's random
  points and the augmentations. With an ``augmentation``, the critic sees (and the
  penalty interpolates between) augmented real and augmented fake batches.
  With ``conditioning``, the update takes the real batch's ``labels`` too (``ClassConditioning``).
  ``metrics`` are the critic loss's and ``critic_grad_norm`` (with ``conditioning``, ``acgan_critic_loss`` and
  ``acgan_real_accuracy``).
  """
  latent = _latent_sampler(models, batch_sharding)

  def critic_update(state, critic_params, critic_opt_state, real_batch, key, labels=None):
    if (labels is not None) != (conditioning is not None):
      raise ValueError("the real batch's labels go with a ClassConditioning, and only with one")
    z_key, penalty_key = jax.random.split(key)
    fake, _ = generate(models, state.generator_params, state.generator_batch_stats,
                       latent(z_key, real_batch.shape[0]), train=True, labels=labels)
    fake = jax.lax.stop_gradient(fake)
    if augmentation is not None:
      real_batch = augmentation(real_batch, jax.random.fold_in(key, _AUGMENT_REAL))
      fake = augmentation(fake, jax.random.fold_in(key, _AUGMENT_FAKE))

    def loss_fn(params):
      if conditioning is None:
        return objective.critic_loss(critic_fn(models, params), real_batch, fake, penalty_key)
      outputs = critic_fn(models, params)
      loss, metrics = objective.critic_loss(lambda x: conditional.split_outputs(outputs(x))[0], real_batch, fake,
                                            penalty_key)
      _, cross_entropy, accuracy = _classifier_terms(outputs(real_batch), labels)
      metrics.update(acgan_critic_loss=cross_entropy, acgan_real_accuracy=accuracy)
      return loss + conditioning.critic_scale * cross_entropy, metrics

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(critic_params)
    updates, critic_opt_state = critic_optimizer.update(grads, critic_opt_state, critic_params)
    metrics["critic_grad_norm"] = optax.tree.norm(grads)
    critic_params = optax.apply_updates(critic_params, updates)
    if objective.critic_constraint is not None:
      critic_params = objective.critic_constraint(critic_params)
    return critic_params, critic_opt_state, metrics

  return critic_update


def make_generator_update(
    models: Models,
    objective: objectives.Objective,
    generator_optimizer: optax.GradientTransformation,
    *,
    augmentation: augment.Augmentation | None = None,
    ema: EMA | None = None,
    conditioning: ClassConditioning | None = None,
    batch_sharding: NamedSharding | None = None,
) -> Callable[[TrainState, jax.Array, int], tuple[TrainState, Metrics]]:
  """One generator update against ``state.critic_params``, ``(state, key, batch_size) -> (state, metrics)``: a step
  of ``generator_optimizer`` on ``objective.generator_loss`` of the critic's scores of (augmented) fakes.

  Updates the generator's parameters, optimizer state and batch-norm
  statistics, then its ``ema`` when there is one (``state`` must then have been made with ``ema=True``);
  ``state.step`` is left to the caller. ``metrics``: ``generator_loss``, ``generator_grad_norm`` and, with an EMA,
  ``ema_beta``.

  The EMA generator keeps batch-norm statistics of its own: after each update
  it runs once in training mode on this update's latents, and its batch-norm
  layers fold the statistics of its own activations into its running averages
  (momentum as the raw generator's). Running averages copied from the raw
  generator would describe another network's activations.
  """
  latent = _latent_sampler(models, batch_sharding)

  def generator_update(state, key, batch_size):
    z = latent(key, batch_size)
    labels = None
    if conditioning is not None:
      labels = jax.random.randint(jax.random.fold_in(key, _GENERATOR_LABELS), (batch_size,), 0,
                                  conditioning.num_classes)

    def generator_loss_fn(params):
      fake, batch_stats = generate(models, params, state.generator_batch_stats, z, train=True, labels=labels)
      if augmentation is not None:
        fake = augmentation(fake, jax.random.fold_in(key, _AUGMENT_FAKE))
      outputs = critic_fn(models, state.critic_params)(fake)
      if conditioning is None:
        return objective.generator_loss(outputs), (batch_stats, {})
      scores, cross_entropy, accuracy = _classifier_terms(outputs, labels)
      loss = objective.generator_loss(scores) + conditioning.generator_scale * cross_entropy
      return loss, (batch_stats, {"acgan_generator_loss": cross_entropy, "acgan_fake_accuracy": accuracy})

    (generator_loss, (batch_stats, classifier_metrics)), grads = jax.value_and_grad(
        generator_loss_fn, has_aux=True)(state.generator_params)
    updates, generator_opt_state = generator_optimizer.update(grads, state.generator_opt_state,
                                                              state.generator_params)
    generator_params = optax.apply_updates(state.generator_params, updates)
    metrics = {"generator_loss": generator_loss, "generator_grad_norm": optax.tree.norm(grads), **classifier_metrics}
    ema_params, ema_batch_stats = state.ema_params, state.ema_batch_stats
    if ema is not None:
      beta = ema.beta(step=state.step, batch_size=batch_size)
      ema_params = jax.tree.map(lambda average, new: new + beta * (average - new), ema_params, generator_params)
      _, ema_batch_stats = generate(models, ema_params, ema_batch_stats, z, train=True, labels=labels)
      metrics["ema_beta"] = beta
    new_state = state.replace(
        generator_params=generator_params,
        generator_batch_stats=batch_stats,
        generator_opt_state=generator_opt_state,
        ema_params=ema_params,
        ema_batch_stats=jax.lax.stop_gradient(ema_batch_stats),
    )
    return new_state, metrics

  return generator_update


def make_train_iteration(
    models: Models,
    objective: objectives.Objective,
    optimizers: Optimizers,
    *,
    n_critic: int,
    augmentation: augment.Augmentation | None = None,
    ema: EMA | None = None,
    conditioning: ClassConditioning | None = None,
    batch_sharding: NamedSharding | None = None,
) -> Callable[[TrainState, Any], tuple[TrainState, Metrics]]:
  """The pure function ``(state, real) -> (state, metrics)`` of one generator iteration: ``n_critic`` critic updates
  (``make_critic_update``), then one generator update (``make_generator_update``); ``state.step`` goes up by one.

  ``real`` holds the real data of the whole iteration, shape ``(n_critic, B, ...)``. ``state`` comes from
  ``init_state`` with the same ``optimizers`` (and ``ema=True`` when an ``ema`` is given).
  ``batch_sharding``, when given, is the sharding of one batch ``(B, ...)``; the
  latent batches are constrained to it so each device works on its own examples (``B`` must be a multiple of its
  number of devices). ``metrics``: the critic updates' metrics averaged over them, and the generator update's.
  """
  critic_update = make_critic_update(models, objective, optimizers.critic, augmentation=augmentation,
                                     conditioning=conditioning, batch_sharding=batch_sharding)
  generator_update = make_generator_update(models, objective, optimizers.generator, augmentation=augmentation,
                                           ema=ema, conditioning=conditioning, batch_sharding=batch_sharding)

  def train_iteration(state: TrainState, real: Any) -> tuple[TrainState, Metrics]:
    labels = None
    if conditioning is not None:
      real, labels = real  # (images, labels), as data.LabelledImages
    if real.shape[0] != n_critic:
      raise ValueError(f"real must hold n_critic={n_critic} batches on its first axis, got shape {real.shape}.")
    step_key = stream_key(state.key, Stream.TRAIN, state.step)

    def scan_body(carry, inputs):
      real_batch, index, *batch_labels = inputs  # batch_labels: [labels] with conditioning, else []
      critic_params, critic_opt_state, metrics = critic_update(
          state, *carry, real_batch, jax.random.fold_in(step_key, index), *batch_labels)
      return (critic_params, critic_opt_state), metrics

    inputs = (real, jnp.arange(n_critic)) + (() if labels is None else (labels,))
    (critic_params, critic_opt_state), critic_metrics = jax.lax.scan(
        scan_body, (state.critic_params, state.critic_opt_state), inputs)
    state = state.replace(critic_params=critic_params, critic_opt_state=critic_opt_state)
    state, generator_metrics = generator_update(state, jax.random.fold_in(step_key, n_critic), real.shape[1])
    metrics = jax.tree.map(jnp.mean, critic_metrics)
    metrics.update(generator_metrics)
    return state.replace(step=state.step + 1), metrics

  return train_iteration


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D ``data`` mesh over all (or the first ``num_devices``) devices."""
  devices = jax.devices()[:num_devices] if num_devices else jax.devices()
  return jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def iteration_data_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Sharding of ``(n_critic, B, ...)`` real data: the batch axis split over ``data``."""
  return NamedSharding(mesh, P(None, "data"))


def compile_train_iteration(
    models: Models,
    objective: objectives.Objective,
    optimizers: Optimizers,
    mesh: jax.sharding.Mesh,
    *,
    n_critic: int,
    augmentation: augment.Augmentation | None = None,
    ema: EMA | None = None,
    conditioning: ClassConditioning | None = None,
) -> Callable[[TrainState, Any], tuple[TrainState, Metrics]]:
  """``make_train_iteration`` jitted for ``mesh``: state replicated and donated, batch (and labels) sharded on
  ``data`` (its size a multiple of the mesh's, as ``configuration.validate`` checks a config's ``batch_size``)."""
  iteration = make_train_iteration(models, objective, optimizers, n_critic=n_critic, augmentation=augmentation,
                                   ema=ema, conditioning=conditioning, batch_sharding=NamedSharding(mesh, P("data")))
  return jax.jit(
      iteration,
      in_shardings=(replicated(mesh), iteration_data_sharding(mesh)),
      out_shardings=(replicated(mesh), replicated(mesh)),
      donate_argnums=0,
  )
