"""The training state and one compiled GAN iteration: ``n_critic`` critic updates, then one generator update (and
its EMA), for any objective of ``objectives``.

A run is a pure function of (config, seed): every random number is drawn from
the run's root key by ``fold_in`` of the generator step held in the state (and of
the critic step within the iteration), so a resumed run draws the same numbers.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from wgan_gp_jax import augment, objectives, optimizers
from wgan_gp_jax.models import Models

if TYPE_CHECKING:  # the core needs no ml_collections: any object with the config's attributes will do
  import ml_collections

# Independent random streams folded out of the run's root key.
TRAIN_STREAM, DATA_STREAM, INIT_STREAM = 0, 1, 2

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
  # The generator's exponential moving average and its own batch-norm statistics; {} when ``config.ema.enabled`` is
  # off.
  ema_params: Any
  ema_batch_stats: Any


def root_key(seed: int) -> jax.Array:
  return jax.random.key(seed)


def stream_key(state_key: jax.Array, stream: int, step: jax.Array | int) -> jax.Array:
  """The key of ``stream`` at generator step ``step``, from the raw root key data."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(state_key), stream), step)


def make_optimizers(config: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
  """The generator's and the critic's optimizers, from the ``generator`` and ``critic`` config groups.

  With ``linear_decay`` a learning rate falls linearly to 0 over the run's updates of that network.
  """
  return (optimizers.build_optimizer(config.generator, num_updates=config.num_steps),
          optimizers.build_optimizer(config.critic, num_updates=config.num_steps * config.n_critic))


def init_state(config: ml_collections.ConfigDict, models: Models) -> TrainState:
  """The initial state of a run, a pure function of the config (seed included)."""
  key = jax.random.key_data(root_key(config.seed))
  generator_key, critic_key = jax.random.split(stream_key(key, INIT_STREAM, 0))
  z = jnp.zeros((1, models.latent_dim), jnp.float32)
  generator_variables = models.generator.init(generator_key, z, train=False)
  critic_variables = models.critic.init(critic_key, jnp.zeros((1,) + models.sample_shape, jnp.float32))
  generator_tx, critic_tx = make_optimizers(config)
  generator_params = generator_variables["params"]
  generator_batch_stats = generator_variables.get("batch_stats", {})
  ema_enabled = config.ema.enabled
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      key=key,
      generator_params=generator_params,
      generator_batch_stats=generator_batch_stats,
      critic_params=critic_variables["params"],
      generator_opt_state=generator_tx.init(generator_params),
      critic_opt_state=critic_tx.init(critic_variables["params"]),
      ema_params=jax.tree.map(jnp.copy, generator_params) if ema_enabled else {},
      ema_batch_stats=jax.tree.map(jnp.copy, generator_batch_stats) if ema_enabled else {},
  )


def generate(models: Models, params: Any, batch_stats: Any, z: jax.Array, *, train: bool) -> tuple[jax.Array, Any]:
  """Generator samples and, in training mode, the updated batch-norm statistics."""
  variables = {"params": params, "batch_stats": batch_stats}
  if not train:
    return models.generator.apply(variables, z, train=False), batch_stats
  samples, updates = models.generator.apply(variables, z, train=True, mutable=["batch_stats"])
  return samples, updates.get("batch_stats", {})


def critic_fn(models: Models, critic_params: Any) -> Callable[[jax.Array], jax.Array]:
  return functools.partial(models.critic.apply, {"params": critic_params})


def ema_beta(ema_config: ml_collections.ConfigDict, *, step: jax.Array | int, batch_size: int) -> jax.Array:
  """The EMA's decay for the update after ``step`` generator steps (StyleGAN2-ADA's ``training_loop.py``).

  ``0.5 ** (batch_size / half_life)``, the half-life being ``half_life_kimg * 1000`` generator images, capped at
  ``rampup * step * batch_size`` (the images seen so far) while ``rampup > 0``: the average forgets its random start
  quickly. A half-life of 0 gives ``beta = 0``: the EMA is the raw generator.
  """
  half_life = jnp.asarray(ema_config.half_life_kimg * 1000.0, jnp.float32)
  if ema_config.rampup > 0:
    half_life = jnp.minimum(half_life, jnp.asarray(step, jnp.float32) * batch_size * ema_config.rampup)
  return 0.5 ** (batch_size / jnp.maximum(half_life, 1e-8))


def _latent_sampler(models: Models, batch_sharding: NamedSharding | None) -> Callable[[jax.Array, int], jax.Array]:
  def latent(key: jax.Array, batch_size: int) -> jax.Array:
    z = jax.random.normal(key, (batch_size, models.latent_dim), jnp.float32)
    if batch_sharding is not None:
      z = jax.lax.with_sharding_constraint(z, batch_sharding)
    return z
  return latent


def make_augmentation(config: ml_collections.ConfigDict) -> Callable[[jax.Array, jax.Array], jax.Array] | None:
  """``(x, key) -> x`` applying DiffAugment's ``config.augment.policy`` to all the critic sees, or None when off."""
  policy = augment.parse_policy(config.augment.policy)
  if not policy:
    return None
  return functools.partial(augment.diff_augment, policy=policy, translation_ratio=config.augment.translation_ratio,
                           cutout_ratio=config.augment.cutout_ratio)


# fold_in constants of the augmentation keys, apart from the splits that draw latents and penalty points.
_AUGMENT_REAL, _AUGMENT_FAKE = 1, 2


def make_critic_update(
    config: ml_collections.ConfigDict,
    models: Models,
    *,
    batch_sharding: NamedSharding | None = None,
) -> Callable[[TrainState, Any, optax.OptState, jax.Array, jax.Array], tuple[Any, optax.OptState, Metrics]]:
  """One critic update, ``(state, critic_params, critic_opt_state, real_batch, key) -> (critic_params, critic_opt_state, metrics)``.

  The fakes come from ``state``'s generator (training-mode batch norm, its
  statistics discarded); ``key`` draws their latents, the penalty's random
  points and the augmentations. With augmentation on, the critic sees (and the
  penalty interpolates between) augmented real and augmented fake batches.
  """
  _, critic_tx = make_optimizers(config)
  objective = objectives.build_objective(config.objective)
  augmentation = make_augmentation(config)
  latent = _latent_sampler(models, batch_sharding)

  def critic_update(state, critic_params, critic_opt_state, real_batch, key):
    z_key, penalty_key = jax.random.split(key)
    fake, _ = generate(models, state.generator_params, state.generator_batch_stats,
                       latent(z_key, real_batch.shape[0]), train=True)
    fake = jax.lax.stop_gradient(fake)
    if augmentation is not None:
      real_batch = augmentation(real_batch, jax.random.fold_in(key, _AUGMENT_REAL))
      fake = augmentation(fake, jax.random.fold_in(key, _AUGMENT_FAKE))

    def loss_fn(params):
      return objective.critic_loss(critic_fn(models, params), real_batch, fake, penalty_key)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(critic_params)
    updates, critic_opt_state = critic_tx.update(grads, critic_opt_state, critic_params)
    metrics["critic_grad_norm"] = optax.tree.norm(grads)
    critic_params = optax.apply_updates(critic_params, updates)
    if objective.critic_constraint is not None:
      critic_params = objective.critic_constraint(critic_params)
    return critic_params, critic_opt_state, metrics

  return critic_update


def make_generator_update(
    config: ml_collections.ConfigDict,
    models: Models,
    *,
    batch_sharding: NamedSharding | None = None,
) -> Callable[[TrainState, jax.Array, int], tuple[TrainState, Metrics]]:
  """One generator update against ``state.critic_params``, ``(state, key, batch_size) -> (state, metrics)``.

  Updates the generator's parameters, optimizer state and batch-norm
  statistics, then its EMA when there is one; ``state.step`` is left to the caller.

  The EMA generator keeps batch-norm statistics of its own: after each update
  it runs once in training mode on this update's latents, and its batch-norm
  layers fold the statistics of its own activations into its running averages
  (momentum as the raw generator's). Running averages copied from the raw
  generator would describe another network's activations.
  """
  generator_tx, _ = make_optimizers(config)
  objective = objectives.build_objective(config.objective)
  augmentation = make_augmentation(config)
  latent = _latent_sampler(models, batch_sharding)

  def generator_update(state, key, batch_size):
    z = latent(key, batch_size)

    def generator_loss_fn(params):
      fake, batch_stats = generate(models, params, state.generator_batch_stats, z, train=True)
      if augmentation is not None:
        fake = augmentation(fake, jax.random.fold_in(key, _AUGMENT_FAKE))
      loss = objective.generator_loss(critic_fn(models, state.critic_params)(fake))
      return loss, batch_stats

    (generator_loss, batch_stats), grads = jax.value_and_grad(generator_loss_fn, has_aux=True)(state.generator_params)
    updates, generator_opt_state = generator_tx.update(grads, state.generator_opt_state, state.generator_params)
    generator_params = optax.apply_updates(state.generator_params, updates)
    metrics = {"generator_loss": generator_loss, "generator_grad_norm": optax.tree.norm(grads)}
    ema_params, ema_batch_stats = state.ema_params, state.ema_batch_stats
    if config.ema.enabled:
      beta = ema_beta(config.ema, step=state.step, batch_size=batch_size)
      ema_params = jax.tree.map(lambda average, new: new + beta * (average - new), ema_params, generator_params)
      _, ema_batch_stats = generate(models, ema_params, ema_batch_stats, z, train=True)
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
    config: ml_collections.ConfigDict,
    models: Models,
    *,
    batch_sharding: NamedSharding | None = None,
) -> Callable[[TrainState, jax.Array], tuple[TrainState, Metrics]]:
  """The pure function ``(state, real) -> (state, metrics)`` of one generator iteration.

  ``real`` holds the real data of the whole iteration, shape ``(n_critic, B, ...)``.
  ``batch_sharding``, when given, is the sharding of one batch ``(B, ...)``; the
  latent batches are constrained to it so each device works on its own examples.
  """
  n_critic = config.n_critic
  critic_update = make_critic_update(config, models, batch_sharding=batch_sharding)
  generator_update = make_generator_update(config, models, batch_sharding=batch_sharding)

  def train_iteration(state: TrainState, real: jax.Array) -> tuple[TrainState, Metrics]:
    if real.shape[0] != n_critic:
      raise ValueError(f"real must hold n_critic={n_critic} batches on its first axis, got shape {real.shape}.")
    step_key = stream_key(state.key, TRAIN_STREAM, state.step)

    def scan_body(carry, inputs):
      real_batch, index = inputs
      critic_params, critic_opt_state, metrics = critic_update(
          state, *carry, real_batch, jax.random.fold_in(step_key, index))
      return (critic_params, critic_opt_state), metrics

    (critic_params, critic_opt_state), critic_metrics = jax.lax.scan(
        scan_body, (state.critic_params, state.critic_opt_state), (real, jnp.arange(n_critic)))
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
    config: ml_collections.ConfigDict, models: Models, mesh: jax.sharding.Mesh,
) -> Callable[[TrainState, jax.Array], tuple[TrainState, Metrics]]:
  """The iteration jitted for ``mesh``: state replicated and donated, batch sharded on ``data``."""
  if config.batch_size % mesh.size:
    raise ValueError(f"batch_size={config.batch_size} must be divisible by the number of devices ({mesh.size}).")
  iteration = make_train_iteration(config, models, batch_sharding=NamedSharding(mesh, P("data")))
  return jax.jit(
      iteration,
      in_shardings=(replicated(mesh), iteration_data_sharding(mesh)),
      out_shardings=(replicated(mesh), replicated(mesh)),
      donate_argnums=0,
  )
