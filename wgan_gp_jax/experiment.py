"""Running an experiment in a work directory, and loading a finished one.

Layout of a work directory::

  DIR/config.json          the config the run was started with
  DIR/checkpoints/<step>/  orbax checkpoints (state and config)
  DIR/metrics.jsonl        one JSON line of metrics every ``log_every`` steps
  DIR/figures/             toy runs: real points, samples and critic contours
  DIR/samples/             image runs: grids from a fixed latent batch
"""

import dataclasses
import functools
import json
import logging
import pathlib
import time
from typing import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from wgan_gp_jax import data, plotting, toy_data
from wgan_gp_jax import train as train_lib
from wgan_gp_jax.models import Models, build_models

SAMPLE_STREAM = 3
_SAMPLE_CHUNK = 1024


class NonFiniteError(RuntimeError):
  """Raised when a training metric is NaN or infinite."""


def checkpoint_manager(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, create=True)
  return ocp.CheckpointManager(workdir / "checkpoints", options=options)


def _abstract_state(config: ml_collections.ConfigDict, models: Models, sharding) -> train_lib.TrainState:
  shapes = jax.eval_shape(lambda: train_lib.init_state(config, models))
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def _toy_batches(config: ml_collections.ConfigDict, sharding, key_data: jax.Array, start_step: int) -> Iterator[jax.Array]:
  """Fresh toy data for every iteration, a pure function of (seed, step)."""

  @jax.jit
  def sample(step):
    points = toy_data.sample(
        config.toy_dataset, train_lib.stream_key(key_data, train_lib.DATA_STREAM, step),
        config.n_critic * config.batch_size)
    return jax.lax.with_sharding_constraint(points.reshape(config.n_critic, config.batch_size, 2), sharding)

  step = start_step
  while True:
    yield sample(step)
    step += 1


def _image_batches(config: ml_collections.ConfigDict, sharding, manager: ocp.CheckpointManager,
                   latest: int | None) -> data.DevicePrefetcher:
  """Real images for every iteration, prefetched to the devices, at the checkpoint's position in the data."""
  batches = data.prefetch_to_device(data.make_train_iterator(config), sharding)
  if latest is not None:
    batches.set_state(manager.restore(latest, args=ocp.args.Composite(data=ocp.args.JsonRestore())).data)
  return batches


def _finite_or_raise(metrics: dict[str, float], step: int) -> None:
  bad = [name for name, value in metrics.items() if not np.isfinite(value)]
  if bad:
    raise NonFiniteError(f"non-finite {', '.join(bad)} at generator step {step}; "
                         f"the last good checkpoint is kept: {metrics}")


@dataclasses.dataclass
class Run:
  """A trained (or training) run: its config, models and state."""
  config: ml_collections.ConfigDict
  models: Models
  state: train_lib.TrainState

  def generate(self, z: jax.Array) -> np.ndarray:
    """Generator outputs for latents ``z`` in evaluation mode (batch-norm running statistics)."""
    outputs = [np.asarray(_generate_eval(self.models, self.state, z[i:i + _SAMPLE_CHUNK]))
               for i in range(0, z.shape[0], _SAMPLE_CHUNK)]
    return np.concatenate(outputs)

  def latents(self, num: int, seed: int) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (num, self.models.latent_dim), jnp.float32)

  def sample(self, num: int, seed: int) -> np.ndarray:
    """``num`` samples: float32 ``(N, 2)`` for toy runs, uint8 ``(N, H, W, C)`` for image runs."""
    outputs = self.generate(self.latents(num, seed))
    if self.config.kind == "toy":
      return outputs.astype(np.float32)
    return to_uint8(outputs)

  def critic(self, x: np.ndarray) -> np.ndarray:
    return np.asarray(_critic_eval(self.models, self.state.critic_params, jnp.asarray(x)))


@functools.partial(jax.jit, static_argnums=0)
def _generate_eval(models: Models, state: train_lib.TrainState, z: jax.Array) -> jax.Array:
  return train_lib.generate(models, state, z, train=False)[0]


@functools.partial(jax.jit, static_argnums=0)
def _critic_eval(models: Models, critic_params, x: jax.Array) -> jax.Array:
  return models.critic.apply({"params": critic_params}, x)


def to_uint8(images: np.ndarray) -> np.ndarray:
  """Maps generator outputs in [-1, 1] to uint8 [0, 255]."""
  return np.clip(np.round((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _write_config(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> None:
  path = workdir / "config.json"
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(config.to_json(indent=2, sort_keys=True))
  tmp.replace(path)


def load_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
  path = pathlib.Path(workdir) / "config.json"
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: is {workdir} the work directory of a run?")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def load_run(workdir: str | pathlib.Path) -> Run:
  """Loads the config and the latest checkpointed state of the run in ``workdir``."""
  workdir = pathlib.Path(workdir).absolute()  # orbax needs absolute paths
  config = load_config(workdir)
  models = build_models(config)
  mesh = train_lib.make_mesh(1)
  with checkpoint_manager(workdir, config) as manager:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {workdir / 'checkpoints'}.")
    abstract = _abstract_state(config, models, train_lib.replicated(mesh))
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))).state
  return Run(config, models, state)


def _write_pictures(run: Run, workdir: pathlib.Path, step: int, fixed_latents: jax.Array) -> None:
  config = run.config
  if config.kind == "toy":
    (workdir / "figures").mkdir(exist_ok=True)
    real = np.asarray(toy_data.sample(config.toy_dataset, jax.random.key(0), 1000))
    plotting.toy_figure(
        workdir / "figures" / f"step_{step:06d}.png", real=real, generated=run.generate(fixed_latents),
        critic=run.critic, title=f"{config.toy_dataset}, generator step {step}")
  else:
    (workdir / "samples").mkdir(exist_ok=True)
    plotting.save_image_grid(workdir / "samples" / f"step_{step:06d}.png", to_uint8(run.generate(fixed_latents)),
                             scale=max(1, 128 // config.resolution))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> Run:
  """Trains ``config`` in ``workdir``, resuming from its latest checkpoint if there is one."""
  workdir = pathlib.Path(workdir).absolute()  # orbax needs absolute paths
  workdir.mkdir(parents=True, exist_ok=True)
  models = build_models(config)
  mesh = train_lib.make_mesh(config.num_devices)
  replicated = train_lib.replicated(mesh)
  data_sharding = train_lib.iteration_data_sharding(mesh)

  manager = checkpoint_manager(workdir, config)
  latest = manager.latest_step()
  if latest is None:
    state = jax.jit(lambda: train_lib.init_state(config, models), out_shardings=replicated)()
  else:
    logging.info("resuming from the checkpoint at step %d", latest)
    abstract = _abstract_state(config, models, replicated)
    state = manager.restore(latest, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))).state
  if jax.process_index() == 0:
    _write_config(workdir, config)

  start_step = int(state.step)
  if config.kind == "toy":
    batches = _toy_batches(config, data_sharding, state.key, start_step)
  else:
    batches = _image_batches(config, data_sharding, manager, latest)
  iteration = train_lib.compile_train_iteration(config, models, mesh)
  fixed_latents = jax.random.normal(
      train_lib.stream_key(state.key, SAMPLE_STREAM, 0), (config.num_fixed_samples, models.latent_dim))

  def save(step: int, state: train_lib.TrainState) -> None:
    items = {"state": ocp.args.StandardSave(state), "config": ocp.args.JsonSave(config.to_dict())}
    if config.kind != "toy":
      items["data"] = ocp.args.JsonSave(batches.get_state())
    manager.save(step, args=ocp.args.Composite(**items), force=True)

  log_path = workdir / "metrics.jsonl"
  started = time.perf_counter()
  for step in range(start_step + 1, config.num_steps + 1):
    state, metrics = iteration(state, next(batches))
    is_last = step == config.num_steps
    should_save = step % config.checkpoint_every == 0 or is_last
    if step % config.log_every == 0 or should_save:
      # Fetching metrics waits for the step; it is also the check that a checkpoint is finite.
      values = {name: float(value) for name, value in jax.device_get(metrics).items()}
      _finite_or_raise(values, step)
      record = {"step": step, "seconds": round(time.perf_counter() - started, 3), **values}
      if jax.process_index() == 0:
        with log_path.open("a") as f:
          f.write(json.dumps(record) + "\n")
      logging.info("step %d: %s", step, " ".join(f"{k}={v:.4g}" for k, v in values.items()))
    if step % config.figure_every == 0 or is_last:
      if jax.process_index() == 0:
        _write_pictures(Run(config, models, state), workdir, step, fixed_latents)
    if should_save:
      save(step, state)
  manager.wait_until_finished()
  manager.close()
  return Run(config, models, state)
