"""Running an experiment in a work directory, and loading a finished one.

What a work directory DIR holds is listed in ``runner.workdir``; which steps log, draw, evaluate, save and stop, in
``runner.schedule``.

Starting on a DIR with checkpoints resumes from the newest readable one, so a run killed at any moment (``kill -9``,
a preemption, a crash) continues with the command it was started with, bit for bit: every random number is a
function of (seed, step) and the data position is in the checkpoint. Lines of ``metrics.jsonl`` past the restored
step are dropped, so the log too reads as if nothing had happened. SIGTERM and Ctrl-C save at the next step
boundary and stop (see ``preemption``). A NaN or infinity in a metric or in the state stops the run before it is
saved (``NonFiniteError``).

With several processes (``jax.distributed``) every process runs ``train_and_evaluate``: each reads its own part of
the data, checkpoints are written by all together, and the config, logs and pictures by process 0 only.

DIR may be any path ``etils.epath`` handles, a bucket (``gs://...``) included: checkpoints go through orbax, the rest
through ``epath`` (``runner.workdir``). Every log line gives the speed and the time left (``progress``); on an
interactive terminal a progress bar shows too.
"""

import contextlib
import dataclasses
import functools
import logging
import time
from typing import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from wgan_gp_jax import configuration, data
from wgan_gp_jax.runner import checkpoint, metric_writer, workdir as workdir_lib, periodic_eval, plotting, preemption
from wgan_gp_jax import toy_data
from wgan_gp_jax.runner import progress, schedule as schedule_lib, workdir_lock
from wgan_gp_jax import train as train_lib
from wgan_gp_jax.models import Models, build_models

_SAMPLE_CHUNK = 1024
# The name a non-finite state goes by in ``NonFiniteError``'s message, beside the metrics' names.
STATE_QUANTITY = "training state"


class NonFiniteError(RuntimeError):
  """Raised when a training metric or the training state is NaN or infinite."""


def _initial_state(config: ml_collections.ConfigDict, models: Models,
                   parts: configuration.TrainingParts) -> train_lib.TrainState:
  return train_lib.init_state(models, parts.optimizers, seed=config.seed, ema=parts.ema is not None)


def _abstract_state(config: ml_collections.ConfigDict, models: Models, parts: configuration.TrainingParts,
                    sharding) -> train_lib.TrainState:
  shapes = jax.eval_shape(lambda: _initial_state(config, models, parts))
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def _toy_batches(config: ml_collections.ConfigDict, sharding, key_data: jax.Array,
                 start_step: int) -> Iterator[jax.Array]:
  """Fresh toy data for every iteration, a pure function of (seed, step)."""

  @jax.jit
  def sample(step):
    points = toy_data.sample(
        config.data.toy_dataset, train_lib.stream_key(key_data, train_lib.Stream.DATA, step),
        config.n_critic * config.batch_size)
    return jax.lax.with_sharding_constraint(points.reshape(config.n_critic, config.batch_size, 2), sharding)

  step = start_step
  while True:
    yield sample(step)
    step += 1


class _NonFiniteWatch:
  """Notes, on the devices and without waiting for them, the first step at which each metric or the state is not
  finite; ``check`` fetches that and raises ``NonFiniteError``.

  Checking every step this way costs no host synchronisation, and the message names the exact step even when the
  loop only looks every ``log_every`` steps.
  """

  def __init__(self, sharding: jax.sharding.NamedSharding):
    self._sharding = sharding
    self._names: list[str] = []
    self._first_step = None  # int32 per name: the first non-finite step, 0 while finite

    @functools.partial(jax.jit, donate_argnums=0, out_shardings=sharding)
    def note(first_step: jax.Array, metrics: train_lib.Metrics, state: train_lib.TrainState) -> jax.Array:
      state_finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(state)
                                        if jnp.issubdtype(leaf.dtype, jnp.inexact)]))
      finite = jnp.stack([jnp.all(jnp.isfinite(metrics[name])) for name in sorted(metrics)] + [state_finite])
      return jnp.where((first_step == 0) & ~finite, state.step, first_step)

    self._note = note

  def note(self, metrics: train_lib.Metrics, state: train_lib.TrainState) -> None:
    if self._first_step is None:
      self._names = [*sorted(metrics), STATE_QUANTITY]
      # Made on the devices: device_put of a host array checks across processes that it is the same everywhere
      # (a collective at every start, once seen to hang in a 2-process CPU run).
      self._first_step = jax.jit(lambda: jnp.zeros(len(self._names), jnp.int32), out_shardings=self._sharding)()
    self._first_step = self._note(self._first_step, metrics, state)

  def check(self, last_checkpoint: int | None) -> None:
    if self._first_step is None:
      return
    first_step = np.asarray(jax.device_get(self._first_step))
    if not first_step.any():
      return
    step = int(first_step[first_step > 0].min())
    names = ", ".join(name for name, first in zip(self._names, first_step) if first == step)
    if last_checkpoint is None:
      outcome = "no checkpoint was saved before it: a restart begins anew"
    else:
      outcome = f"the last good checkpoint, at step {last_checkpoint}, is kept and a restart resumes from it"
    raise NonFiniteError(f"non-finite {names} at generator step {step}; {outcome}")


@dataclasses.dataclass
class Run:
  """A trained (or training) run: its config, models and state.

  Samples come from the generator's EMA when the run keeps one (``config.ema.enabled``), unless ``use_ema`` is False.
  """
  config: ml_collections.ConfigDict
  models: Models
  state: train_lib.TrainState
  use_ema: bool = True

  @property
  def has_ema(self) -> bool:
    return bool(jax.tree.leaves(self.state.ema_params))

  @property
  def samples_from_ema(self) -> bool:
    return self.use_ema and self.has_ema

  @property
  def num_classes(self) -> int:
    """The classes of a class-conditional run (``model.num_classes``); 0 for an unconditional one."""
    return self.models.num_classes

  def labels(self, num: int, label: int | None = None) -> np.ndarray | None:
    """The labels of ``num`` samples of a class-conditional run: ``label`` for all, else the classes in turn
    (0, 1, ..., K-1, 0, ...); None for an unconditional run (which refuses a ``label``)."""
    if not self.num_classes:
      if label is not None:
        raise ValueError(f"label={label}: this run is not class-conditional (model.num_classes=0)")
      return None
    if label is not None and not 0 <= label < self.num_classes:
      raise ValueError(f"label={label}: this run's classes are 0 to {self.num_classes - 1}")
    return np.full(num, label, np.int32) if label is not None else np.arange(num, dtype=np.int32) % self.num_classes

  def generate(self, z: jax.Array, labels: np.ndarray | None = None) -> np.ndarray:
    """Generator outputs for latents ``z`` (and, class-conditional, ``labels``, default ``labels(len(z))``) in
    evaluation mode (batch-norm running statistics)."""
    if self.samples_from_ema:
      params, batch_stats = self.state.ema_params, self.state.ema_batch_stats
    else:
      params, batch_stats = self.state.generator_params, self.state.generator_batch_stats
    if labels is None:
      labels = self.labels(z.shape[0])
    outputs = []
    for i in range(0, z.shape[0], _SAMPLE_CHUNK):
      condition = None if labels is None else jnp.asarray(labels[i:i + _SAMPLE_CHUNK])
      outputs.append(np.asarray(_generate_eval(self.models, params, batch_stats, z[i:i + _SAMPLE_CHUNK], condition)))
    return np.concatenate(outputs)

  def latents(self, num: int, seed: int) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (num, self.models.latent_dim), jnp.float32)

  def sample(self, num: int, seed: int, label: int | None = None) -> np.ndarray:
    """``num`` samples: float32 ``(N, 2)`` for toy runs, uint8 ``(N, H, W, C)`` for image runs; of a
    class-conditional run, of class ``label``, else of the classes in turn (``labels``)."""
    outputs = self.generate(self.latents(num, seed), self.labels(num, label))
    if self.config.kind == "toy":
      return outputs.astype(np.float32)
    return to_uint8(outputs)

  def critic(self, x: np.ndarray) -> np.ndarray:
    """The critic's scores ``(N,)`` of ``x``."""
    outputs = np.asarray(_critic_eval(self.models, self.state.critic_params, jnp.asarray(x)))
    return outputs[:, 0] if self.num_classes else outputs

  def classify(self, x: np.ndarray) -> np.ndarray:
    """A class-conditional run's critic's class logits ``(N, num_classes)`` of ``x`` (images in [-1, 1])."""
    if not self.num_classes:
      raise ValueError("classify: this run is not class-conditional (model.num_classes=0)")
    outputs = [np.asarray(_critic_eval(self.models, self.state.critic_params, jnp.asarray(x[i:i + _SAMPLE_CHUNK])))
               for i in range(0, len(x), _SAMPLE_CHUNK)]
    return np.concatenate(outputs)[:, 1:]


@functools.partial(jax.jit, static_argnums=0)
def _generate_eval(models: Models, params, batch_stats, z: jax.Array, labels: jax.Array | None) -> jax.Array:
  return train_lib.generate(models, params, batch_stats, z, train=False, labels=labels)[0]


@functools.partial(jax.jit, static_argnums=0)
def _critic_eval(models: Models, critic_params, x: jax.Array) -> jax.Array:
  return models.critic.apply({"params": critic_params}, x)


def to_uint8(images: np.ndarray) -> np.ndarray:
  """Maps generator outputs in [-1, 1] to uint8 [0, 255]."""
  return np.clip(np.round((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _write_config(workdir: epath.Path, config: ml_collections.ConfigDict) -> None:
  workdir_lib.write_text_whole(workdir / workdir_lib.CONFIG_FILENAME, config.to_json(indent=2, sort_keys=True))


def load_run(workdir: epath.PathLike, *, use_ema: bool = True, best: bool = False, step: int | None = None,
             kernels: str | None = None) -> Run:
  """Loads the config and state of the newest readable checkpoint of the run in ``workdir`` (or the one at ``step``).

  Its samples come from the generator's EMA where the run has one, unless ``use_ema`` is False. With ``best``, the
  checkpoint of the best FID measured during training (``periodic_eval``). ``kernels`` (``models.KERNEL_CHOICES``),
  where given, replaces the run's ``model.kernels`` in the returned config and models: the same parameters, computed
  by the other backend's layers. Nothing in ``workdir`` is changed, so this is safe while the run is still training.
  """
  workdir = workdir_lib.workdir_path(workdir)
  directory_name = workdir_lib.BEST_CHECKPOINT_DIRNAME if best else workdir_lib.CHECKPOINTS_DIRNAME
  if not (workdir / directory_name).is_dir():
    raise FileNotFoundError(
        f"no checkpoint in {workdir / directory_name}: is {workdir} the work directory of a run"
        + (" that evaluated FID while training?" if best else "?"))
  replicated = train_lib.replicated(train_lib.make_mesh(1))
  with checkpoint.Checkpoints(workdir, read_only=True, directory_name=directory_name) as checkpoints:
    restored = checkpoints.restore_latest(
        lambda config: _abstract_state(config, build_models(config), configuration.training_parts(config), replicated),
        step=step)
  if restored is None:
    raise FileNotFoundError(f"no checkpoint in {workdir / directory_name}.")
  _, state, config = restored
  if kernels is not None:
    config = configuration.override(config, {"model.kernels": kernels})
  return Run(config, build_models(config), state, use_ema=use_ema)


def _write_pictures(run: Run, workdir: epath.Path, step: int) -> tuple[str, np.ndarray]:
  """Draws the run's pictures on this process's first device (so that process 0 can do it alone); returns the
  picture's TensorBoard name and pixels."""
  config = run.config
  run = dataclasses.replace(run, state=jax.device_get(run.state))
  fixed_latents = jax.random.normal(
      train_lib.stream_key(run.state.key, train_lib.Stream.SAMPLE, 0),
      (config.logging.num_fixed_samples, run.models.latent_dim))
  if config.kind == "toy":
    folder = workdir / workdir_lib.FIGURES_DIRNAME
    folder.mkdir(exist_ok=True)
    real = np.asarray(toy_data.sample(config.data.toy_dataset, jax.random.key(0), 1000))
    return "figure", plotting.toy_figure(
        folder / workdir_lib.picture_filename(step), real=real, generated=run.generate(fixed_latents),
        critic=run.critic, title=f"{config.data.toy_dataset}, generator step {step}")
  folder = workdir / workdir_lib.SAMPLES_DIRNAME
  folder.mkdir(exist_ok=True)
  return "samples", plotting.save_image_grid(
      folder / workdir_lib.picture_filename(step), to_uint8(run.generate(fixed_latents)),
      scale=max(1, 128 // config.data.resolution))


def _evaluate(fid: periodic_eval.PeriodicFID, run: Run, workdir: epath.Path, step: int) -> dict[str, float]:
  """The FID of ``run`` at ``step`` (``{}`` where it cannot be had). A new best replaces the best checkpoint with
  this step's, and is recorded once that is complete.

  A start of the run that was killed after saving this step's best checkpoint left it there already: every step's
  state is a function of the run, so that checkpoint is this state, and is kept as it is.
  """
  evaluation = fid.evaluate(run.sample, step)
  if evaluation and fid.is_new_best(evaluation[fid.metric]):
    with checkpoint.Checkpoints(workdir, keep=1, directory_name=workdir_lib.BEST_CHECKPOINT_DIRNAME) as best:
      if step not in best.steps():
        best.save(step, run.state, run.config)
        best.wait_until_finished()
    fid.record_best(step, evaluation[fid.metric])
  return evaluation


def _write_log_line(writer: metric_writer.MetricWriter, speed: progress.Progress, step: int,
                    metrics: train_lib.Metrics, evaluation: dict[str, float], *, started: float) -> None:
  """The step's metrics and evaluation in ``metrics.jsonl``, TensorBoard and the log, with the run's speed."""
  values = {name: float(value) for name, value in jax.device_get(metrics).items()}
  values.update(evaluation)
  rates = speed.report(step)
  writer.write_scalars(step, values, seconds=time.perf_counter() - started, speed=rates)
  logging.info("step %d: %s%s", step, " ".join(f"{k}={v:.4g}" for k, v in values.items()),
               progress.Progress.describe(rates))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: epath.PathLike) -> Run:
  """Trains ``config`` in ``workdir``, resuming from its newest readable checkpoint if there is one.

  Raises ``configuration.ConfigError`` before anything is built for a config that cannot make a run,
  ``preemption.RunInterrupted`` after saving on SIGTERM or Ctrl-C, ``NonFiniteError`` on a NaN or infinity,
  ``checkpoint.ConfigMismatchError`` if the checkpoint was made with a config that may not change, and
  ``checkpoint.CheckpointError`` if the work directory cannot hold the checkpoints or none of them can be read, and
  ``workdir_lock.WorkdirLocked`` if another live trainer holds the work directory (naming it).
  """
  workdir = workdir_lib.workdir_path(workdir)
  mesh = train_lib.make_mesh(config.num_devices)
  configuration.validate(config, num_devices=mesh.size)
  models = build_models(config)
  parts = configuration.training_parts(config)
  abstract_state = _abstract_state(config, models, parts, train_lib.replicated(mesh))
  checkpoint.check_workdir(workdir, checkpoint_bytes=checkpoint.state_bytes(abstract_state),
                           keep_checkpoints=config.checkpoint.keep)
  with _locked(workdir, config.checkpoint.lock_stale_seconds):
    return _train(config, workdir, models, parts, mesh, abstract_state)


@contextlib.contextmanager
def _locked(workdir: epath.Path, stale_after_seconds: float) -> Iterator[None]:
  """Holds the work directory's lock for the run: process 0 takes it, and every process learns whether it did."""
  lock = workdir_lock.WorkdirLock(workdir, stale_after_seconds=stale_after_seconds)
  refusal = ""
  if jax.process_index() == 0:
    try:
      lock.acquire()
    except (workdir_lock.WorkdirLocked, OSError) as error:  # OSError: cannot write the lock; the others must hear
      refusal = str(error)
  if jax.process_count() > 1:
    refused = multihost_utils.broadcast_one_to_all(np.int32(bool(refusal)))
    if refused and not refusal:
      refusal = f"process 0 found {workdir} in use by another trainer (its log names it)"
  if refusal:
    raise workdir_lock.WorkdirLocked(refusal)
  try:
    yield
  finally:
    lock.release()


def _train(config: ml_collections.ConfigDict, workdir: epath.Path, models: Models, parts: configuration.TrainingParts,
           mesh: jax.sharding.Mesh, abstract_state: train_lib.TrainState) -> Run:
  replicated = train_lib.replicated(mesh)
  data_sharding = train_lib.iteration_data_sharding(mesh)
  image_batches = None
  if config.kind != "toy":
    image_batches = data.prefetch_to_device(
        data.make_train_iterator(config, with_labels=config.model.num_classes > 0), data_sharding)

  with (checkpoint.Checkpoints(workdir, keep=config.checkpoint.keep, keep_period=config.checkpoint.keep_period)
        as checkpoints,
        preemption.StopRequests() as stop_requests, contextlib.ExitStack() as closing):
    restored = checkpoints.restore_latest(lambda _: abstract_state, requested_config=config,
                                          data_iterator=image_batches)
    if restored is None:
      state = jax.jit(lambda: _initial_state(config, models, parts), out_shardings=replicated)()
      start_step = 0
    else:
      start_step, state, saved_config = restored
      if start_step >= config.num_steps:
        logging.info("the checkpoint is at generator step %d and num_steps is %d: nothing to train", start_step,
                     config.num_steps)
      else:
        logging.info("resuming from the checkpoint at generator step %d, to step %d", start_step, config.num_steps)
      linear_decay = config.critic.linear_decay or config.generator.linear_decay
      if linear_decay and config.num_steps != saved_config.num_steps:
        logging.warning(
            "num_steps was %d and is now %d: with linear_decay the learning rates now fall to 0 at step %d, so this"
            " run continues the checkpoint's rather than repeating a %d-step run", saved_config.num_steps,
            config.num_steps, config.num_steps, config.num_steps)
    if jax.process_index() == 0:
      _write_config(workdir, config)
    writer = closing.enter_context(metric_writer.MetricWriter(workdir, start_step=start_step))

    logging.info("training on %d device(s), process %d of %d", mesh.size, jax.process_index(), jax.process_count())
    if image_batches is None:
      batches = _toy_batches(config, data_sharding, state.key, start_step)
    else:
      batches = image_batches
    iteration = train_lib.compile_train_iteration(models, parts.objective, parts.optimizers, mesh,
                                                  n_critic=config.n_critic, augmentation=parts.augmentation,
                                                  ema=parts.ema, conditioning=parts.conditioning)
    non_finite = _NonFiniteWatch(replicated)
    fid = periodic_eval.create(config, workdir)
    if fid is not None:
      fid.forget_best_after(start_step)
    started = time.perf_counter()
    speed = closing.enter_context(progress.Progress(
        start_step=start_step, num_steps=config.num_steps, images_per_step=config.n_critic * config.batch_size,
        show_bar=None if jax.process_index() == 0 else False))
    schedule = schedule_lib.Schedule.from_config(config)
    timed_from = None  # the end of this start's first step (its compilation), from which steps are timed
    for step in range(start_step + 1, config.num_steps + 1):
      state, metrics = iteration(state, next(batches))
      timed_from = timed_from or time.perf_counter()
      non_finite.note(metrics, state)
      speed.step_done(step)
      stop_signal = stop_requests.signal_at(step)
      evaluation_granted = fid is not None and fid.due(step)
      actions = schedule.actions(step, stop_requested=stop_signal is not None, evaluation_granted=evaluation_granted)
      if actions.reads_state:
        # Waits for the step. Past this check the state is finite: it may be logged, drawn, evaluated and saved.
        non_finite.check(checkpoints.latest_step())
      evaluation = {}
      if actions.evaluate:
        timed_steps = step - start_step - 1
        step_seconds = (time.perf_counter() - (timed_from if timed_steps else started)) / max(timed_steps, 1)
        evaluation = _evaluate(fid, Run(config, models, state), workdir, step)
        if evaluation:
          fid.plan(step, step_seconds=step_seconds, evaluation_seconds=evaluation["fid_seconds"])
      if actions.log or evaluation:
        _write_log_line(writer, speed, step, metrics, evaluation, started=started)
      if actions.draw and jax.process_index() == 0:
        writer.write_image(step, *_write_pictures(Run(config, models, state), workdir, step))
      if actions.save:
        checkpoints.save(step, state, config, image_batches)
      if actions.stop:
        checkpoints.wait_until_finished()
        raise preemption.RunInterrupted(step=step, signal_number=stop_signal, directory=checkpoints.directory)
    checkpoints.wait_until_finished()
  return Run(config, models, state)
