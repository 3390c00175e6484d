"""The training state and one compiled WGAN-GP iteration: ``n_critic`` critic updates, then one generator update.

A run is a pure function of (config, seed): every random number is drawn from
the run's root key by ``fold_in`` of the generator step held in the state (and of
the critic step within the iteration), so a resumed run draws the same numbers.
"""

import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from wgan_gp_jax import losses
from wgan_gp_jax.models import Models

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


def root_key(seed: int) -> jax.Array:
  return jax.random.key(seed)


def stream_key(state_key: jax.Array, stream: int, step: jax.Array | int) -> jax.Array:
  """The key of ``stream`` at generator step ``step``, from the raw root key data."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(state_key), stream), step)


def make_optimizers(config: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
  """The generator's and the critic's optimizers: ``config.optimizer`` is ``adam`` or ``sgd``.

  The paper uses Adam (lr 1e-4, b1 0, b2 0.9). With ``config.linear_decay`` both
  learning rates fall linearly to 0 over the run, as in the paper's CIFAR-10
  ResNet experiments.
  """

  def optimizer(steps: int) -> optax.GradientTransformation:
    lr = config.learning_rate
    if config.linear_decay:
      lr = optax.linear_schedule(config.learning_rate, 0.0, steps)
    if config.optimizer == "adam":
      return optax.adam(lr, b1=config.b1, b2=config.b2)
    if config.optimizer == "sgd":
      return optax.sgd(lr)
    raise ValueError(f"config.optimizer must be 'adam' or 'sgd', got {config.optimizer!r}.")

  return optimizer(config.num_steps), optimizer(config.num_steps * config.n_critic)


def init_state(config: ml_collections.ConfigDict, models: Models) -> TrainState:
  """The initial state of a run, a pure function of the config (seed included)."""
  key = jax.random.key_data(root_key(config.seed))
  generator_key, critic_key = jax.random.split(stream_key(key, INIT_STREAM, 0))
  z = jnp.zeros((1, models.latent_dim), jnp.float32)
  generator_variables = models.generator.init(generator_key, z, train=False)
  critic_variables = models.critic.init(critic_key, jnp.zeros((1,) + models.sample_shape, jnp.float32))
  generator_tx, critic_tx = make_optimizers(config)
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      key=key,
      generator_params=generator_variables["params"],
      generator_batch_stats=generator_variables.get("batch_stats", {}),
      critic_params=critic_variables["params"],
      generator_opt_state=generator_tx.init(generator_variables["params"]),
      critic_opt_state=critic_tx.init(critic_variables["params"]),
  )


def generate(models: Models, state: TrainState, z: jax.Array, *, train: bool) -> tuple[jax.Array, Any]:
  """Generator samples and, in training mode, the updated batch-norm statistics."""
  variables = {"params": state.generator_params, "batch_stats": state.generator_batch_stats}
  if not train:
    return models.generator.apply(variables, z, train=False), state.generator_batch_stats
  samples, updates = models.generator.apply(variables, z, train=True, mutable=["batch_stats"])
  return samples, updates.get("batch_stats", {})


def critic_fn(models: Models, critic_params: Any) -> Callable[[jax.Array], jax.Array]:
  return functools.partial(models.critic.apply, {"params": critic_params})


def _latent_sampler(models: Models, batch_sharding: NamedSharding | None) -> Callable[[jax.Array, int], jax.Array]:
  def latent(key: jax.Array, batch_size: int) -> jax.Array:
    z = jax.random.normal(key, (batch_size, models.latent_dim), jnp.float32)
    if batch_sharding is not None:
      z = jax.lax.with_sharding_constraint(z, batch_sharding)
    return z
  return latent


def make_critic_update(
    config: ml_collections.ConfigDict,
    models: Models,
    *,
    batch_sharding: NamedSharding | None = None,
) -> Callable[[TrainState, Any, optax.OptState, jax.Array, jax.Array], tuple[Any, optax.OptState, Metrics]]:
  """One critic update, ``(state, critic_params, critic_opt_state, real_batch, key) -> (critic_params, critic_opt_state, metrics)``.

  The fakes come from ``state``'s generator (training-mode batch norm, its
  statistics discarded); ``key`` draws their latents and the penalty's
  interpolation coefficients.
  """
  _, critic_tx = make_optimizers(config)
  latent = _latent_sampler(models, batch_sharding)

  def critic_update(state, critic_params, critic_opt_state, real_batch, key):
    z_key, penalty_key = jax.random.split(key)
    fake, _ = generate(models, state, latent(z_key, real_batch.shape[0]), train=True)
    fake = jax.lax.stop_gradient(fake)

    def loss_fn(params):
      return losses.wgan_gp_critic_loss(
          critic_fn(models, params), real_batch, fake, penalty_key,
          gp_weight=config.gp_weight, drift_weight=config.drift_weight)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(critic_params)
    updates, critic_opt_state = critic_tx.update(grads, critic_opt_state, critic_params)
    metrics["critic_grad_norm"] = optax.tree.norm(grads)
    return optax.apply_updates(critic_params, updates), critic_opt_state, metrics

  return critic_update


def make_generator_update(
    config: ml_collections.ConfigDict,
    models: Models,
    *,
    batch_sharding: NamedSharding | None = None,
) -> Callable[[TrainState, jax.Array, int], tuple[TrainState, Metrics]]:
  """One generator update against ``state.critic_params``, ``(state, key, batch_size) -> (state, metrics)``.

  Updates the generator's parameters, optimizer state and batch-norm
  statistics; ``state.step`` is left to the caller.
  """
  generator_tx, _ = make_optimizers(config)
  latent = _latent_sampler(models, batch_sharding)

  def generator_update(state, key, batch_size):
    z = latent(key, batch_size)

    def generator_loss_fn(params):
      fake, batch_stats = generate(models, state.replace(generator_params=params), z, train=True)
      loss = losses.wasserstein_generator_loss(models.critic.apply({"params": state.critic_params}, fake))
      return loss, batch_stats

    (generator_loss, batch_stats), grads = jax.value_and_grad(generator_loss_fn, has_aux=True)(state.generator_params)
    updates, generator_opt_state = generator_tx.update(grads, state.generator_opt_state, state.generator_params)
    new_state = state.replace(
        generator_params=optax.apply_updates(state.generator_params, updates),
        generator_batch_stats=batch_stats,
        generator_opt_state=generator_opt_state,
    )
    return new_state, {"generator_loss": generator_loss, "generator_grad_norm": optax.tree.norm(grads)}

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
