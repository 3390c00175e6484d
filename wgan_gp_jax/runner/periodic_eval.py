"""FID while training: the FID of ``evaluation.num_samples`` samples (the EMA generator's where the run keeps one)
against the cached Inception features of the real images, logged as ``fid_<N>`` (FID depends on N), and the
checkpoint with the best FID kept beside the latest.

Which steps are evaluated is a function of the step alone, so that a run stopped and resumed evaluates the steps an
uninterrupted run evaluates and keeps the same best checkpoint:

  * the first evaluation is at generator step ``evaluation.every``, and the run's last step is always evaluated;
  * the first evaluation plans the others (``plan_cadence``): from this start's measured time per generator step and
    the evaluation's own time, the smallest multiple of ``evaluation.every`` (the cadence) at which all the run's
    evaluations take at most ``evaluation.max_time_fraction`` of its wall time. The plan is written to
    ``DIR/evaluation_plan.json`` and every later start of the run follows it (a start whose ``evaluation.every``,
    ``num_samples`` or ``max_time_fraction`` differ from the plan's plans again at its first evaluation). In a
    multi-process run process 0's plan is everyone's.

Loading the Inception and the real images' statistics (computed once per data set, then read from the cache) is
logged, not counted as evaluation time.

The best checkpoint lives in ``DIR/best_checkpoint/`` (one, the same format as ``DIR/checkpoints``) with its record
``best.json`` (``{"step", "metric", "value"}``; the names are ``runner.workdir``'s), written once the checkpoint is
complete, so a resumed run knows its best without evaluating anything again.
"""

import dataclasses
import json
import logging
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from wgan_gp_jax.runner import schedule, workdir as workdir_lib

# The seed of the evaluation's latents: the same samples' latents at every evaluation, so that the curve shows the
# generator change, not the draw.
SAMPLE_SEED = 20_171_231

# images (N, H, W, C) uint8 -> pool3 features (N, 2048)
FeaturesFn = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class FIDModel:
  """What an FID needs: a features function and the real set's statistics."""
  features: FeaturesFn
  real_mu: np.ndarray
  real_sigma: np.ndarray
  description: str


def load_fid_model(config: ml_collections.ConfigDict) -> FIDModel:
  """The FID Inception and the real images' statistics for ``config`` (computed once, then read from the cache).

  The real images are ``evaluation.reference`` (default ``data.image_folder``, less its ``data.held_out`` last
  images: those the run trains on), preprocessed as in training (the run's resolution, crop and channels). The Inception computes its convolutions as the run's ``model.kernels`` says
  (``inception.inception_features``). Raises ``RuntimeError``, ``FileNotFoundError`` or ``ValueError`` where the
  weights or the images cannot be had.
  """
  from wgan_gp_jax.metrics import inception, reference  # Inception is needed only by runs that evaluate.

  folder = config.evaluation.reference or config.data.image_folder
  if not folder:
    raise ValueError("evaluation needs real images: set evaluation.reference or data.image_folder")
  params = inception.load_inception()
  kernels = config.model.kernels
  real = reference.reference_features(folder, params=params, resolution=config.data.resolution,
                                      crop=config.data.crop, channels=config.data.channels, kernels=kernels)
  if config.data.held_out and not config.evaluation.reference:  # the images the run trains on
    training, _ = reference.held_out_splits(len(real.features), config.data.held_out)
    real = reference.subset(real, training)

  def features(images: np.ndarray) -> np.ndarray:
    return inception.inception_features(images, params=params, kernels=kernels)["pool3"]

  return FIDModel(features, real.mu, real.sigma, f"{len(real.features)} real images of {folder}")


def evaluation_steps(*, every: int, cadence: int, num_steps: int) -> list[int]:
  """The steps evaluated: ``every`` (the first), the multiples of ``cadence`` and ``num_steps`` (the last), up to
  ``num_steps``."""
  steps = set(range(cadence, num_steps + 1, cadence)) | {num_steps}
  return sorted(steps | ({every} if every <= num_steps else set()))


def plan_cadence(*, every: int, num_steps: int, step_seconds: float, evaluation_seconds: float,
                 max_time_fraction: float) -> int:
  """The smallest multiple of ``every`` whose ``evaluation_steps`` take at most ``max_time_fraction`` of the run's
  estimated wall time (``num_steps * step_seconds`` of training plus the evaluations at ``evaluation_seconds`` each);
  ``num_steps`` (the first and the last evaluation only) where none does."""
  if every <= 0 or num_steps <= 0:
    raise ValueError(f"plan_cadence: every and num_steps must be positive, got {every} and {num_steps}")
  training_seconds = num_steps * max(step_seconds, 0.0)
  for cadence in range(every, num_steps + 1, every):
    evaluations = len(evaluation_steps(every=every, cadence=cadence, num_steps=num_steps)) * evaluation_seconds
    if evaluations <= max_time_fraction * (training_seconds + evaluations):
      return cadence
  return num_steps


class PeriodicFID:
  """Decides which steps to evaluate (``due``), evaluates, plans the cadence at the first evaluation (``plan``), and
  remembers the best value (``best_step``, ``best_value``).

  The Inception and the real statistics are loaded (``load(config)``) at the first evaluation, so a run that never
  reaches one pays nothing; where they cannot be had, that is logged and the run goes on without FID.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: epath.Path,
               load: Callable[[ml_collections.ConfigDict], FIDModel] | None = None):
    self._config = config
    self._load = load
    self._model: FIDModel | None = None
    self.every = config.evaluation.every
    self.num_steps = config.num_steps
    self.num_samples = config.evaluation.num_samples
    self.max_time_fraction = config.evaluation.max_time_fraction
    self.metric = f"fid_{self.num_samples}"
    self.plan_path = epath.Path(workdir) / workdir_lib.EVALUATION_PLAN_FILENAME
    self.best_directory = epath.Path(workdir) / workdir_lib.BEST_CHECKPOINT_DIRNAME
    self.cadence: int | None = None
    plan = json.loads(self.plan_path.read_text()) if self.plan_path.exists() else None
    if plan is not None and all(plan.get(key) == value for key, value in self._plan_basis().items()):
      self.cadence = plan["cadence"]
    self.best_step: int | None = None
    self.best_value = float("inf")
    record = best_state_record(workdir)
    if record is not None and record["metric"] == self.metric:  # another N is another metric: the best starts anew
      self.best_step, self.best_value = record["step"], record["value"]

  def _plan_basis(self) -> dict[str, Any]:
    return {"every": self.every, "num_samples": self.num_samples, "max_time_fraction": self.max_time_fraction}

  def forget_best_after(self, step: int) -> None:
    """A run resumed from ``step`` redoes what followed it, so a best found later is not a best of this run."""
    if self.best_step is not None and self.best_step > step:
      self.best_step, self.best_value = None, float("inf")

  def due(self, step: int) -> bool:
    """True when ``step`` is evaluated: the run's last step, and before the plan is made every multiple of
    ``every``, after it ``evaluation_steps``."""
    if not self.every:
      return False
    if step == self.num_steps:
      return True
    if not schedule.evaluation_due(step, self.every):
      return False
    return self.cadence is None or step == self.every or step % self.cadence == 0

  def evaluate(self, sample: Callable[[int, int], np.ndarray], step: int) -> dict[str, float]:
    """``{fid_<N>: value, fid_seconds: duration}`` of ``sample(num, seed)``'s images at ``step``; ``{}`` where the
    FID cannot be had (then no evaluation is due any more)."""
    from wgan_gp_jax.metrics import fid as fid_lib

    if self._model is None:
      start = time.perf_counter()
      try:
        self._model = (self._load or load_fid_model)(self._config)
      except (RuntimeError, FileNotFoundError, ValueError) as error:
        logging.warning("no FID during training: %s", error)
        self.every = 0
        return {}
      logging.info("FID of %d samples against %s (loaded in %.0f s)", self.num_samples, self._model.description,
                   time.perf_counter() - start)
    start = time.perf_counter()
    features = self._model.features(sample(self.num_samples, SAMPLE_SEED))
    mu, sigma = fid_lib.gaussian_statistics(features)
    value = float(fid_lib.frechet_distance(mu, sigma, self._model.real_mu, self._model.real_sigma))
    seconds = time.perf_counter() - start
    logging.info("step %d: %s=%.2f (%.1f s)", step, self.metric, value, seconds)
    return {self.metric: value, "fid_seconds": seconds}

  def plan(self, step: int, *, step_seconds: float, evaluation_seconds: float) -> None:
    """Plans the cadence (``plan_cadence``) unless the run has its plan; every process takes process 0's and process
    0 writes it to ``DIR/evaluation_plan.json``."""
    if self.cadence is not None or not self.every:
      return
    cadence = plan_cadence(every=self.every, num_steps=self.num_steps, step_seconds=step_seconds,
                           evaluation_seconds=evaluation_seconds, max_time_fraction=self.max_time_fraction)
    if jax.process_count() > 1:
      cadence = int(multihost_utils.broadcast_one_to_all(np.int32(cadence)))
    self.cadence = cadence
    steps = evaluation_steps(every=self.every, cadence=cadence, num_steps=self.num_steps)
    logging.info("FID at steps %s (every %d steps and the last): %.1f s per evaluation, %.3f s per step, at most"
                 " evaluation.max_time_fraction=%g of the run", _steps_text(steps), cadence, evaluation_seconds,
                 step_seconds, self.max_time_fraction)
    if jax.process_index() == 0:
      workdir_lib.write_text_whole(self.plan_path, json.dumps(self._plan_basis() | {
          "cadence": cadence, "planned_at_step": step, "step_seconds": step_seconds,
          "evaluation_seconds": evaluation_seconds}) + "\n")

  def is_new_best(self, value: float) -> bool:
    return value < self.best_value

  def record_best(self, step: int, value: float) -> None:
    """Called once the best checkpoint of ``step`` is complete."""
    self.best_step, self.best_value = step, value
    if jax.process_index() == 0:
      workdir_lib.write_text_whole(self.best_directory / workdir_lib.BEST_RECORD_FILENAME,
                                   json.dumps({"step": step, "metric": self.metric, "value": value}) + "\n")


def _steps_text(steps: list[int]) -> str:
  return ", ".join(map(str, steps)) if len(steps) <= 8 else f"{steps[0]}, {steps[1]}, {steps[2]}, ..., {steps[-1]}"


def create(config: ml_collections.ConfigDict, workdir: epath.Path,
           load: Callable[[ml_collections.ConfigDict], FIDModel] | None = None) -> PeriodicFID | None:
  """The periodic FID of an image run with ``evaluation.every > 0``, else None."""
  if config.kind != "image" or not config.evaluation.every:
    return None
  return PeriodicFID(config, workdir, load)


def best_state_record(workdir: epath.PathLike) -> dict[str, Any] | None:
  """``{"step", "metric", "value"}`` of the best checkpoint of the run in ``workdir``, or None."""
  path = epath.Path(workdir) / workdir_lib.BEST_CHECKPOINT_DIRNAME / workdir_lib.BEST_RECORD_FILENAME
  return json.loads(path.read_text()) if path.exists() else None
