"""FID while training: every ``evaluation.every`` generator steps, the FID of ``evaluation.num_samples`` samples (the
EMA generator's where the run keeps one) against the cached Inception features of the real images, logged as
``fid_<N>`` (FID depends on N), and the checkpoint with the best FID kept beside the latest.

The cost is bounded: an evaluation that is due is postponed (and the postponement logged) while the evaluations of
this start of the run, the due one included (estimated by the last one's duration), would take more than
``evaluation.max_time_fraction`` of its wall time. The first one is never postponed. Loading the Inception and the
real images' statistics (computed once per data set, then read from the cache) is logged, not counted.

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

  The real images are ``evaluation.reference`` (default ``data.image_folder``), preprocessed as in training (the
  run's resolution, crop and channels). The Inception computes its convolutions as the run's ``model.kernels`` says
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

  def features(images: np.ndarray) -> np.ndarray:
    return inception.inception_features(images, params=params, kernels=kernels)["pool3"]

  return FIDModel(features, real.mu, real.sigma, f"{len(real.features)} real images of {folder}")


class PeriodicFID:
  """Decides when to evaluate, evaluates, and remembers the best value (``best_step``, ``best_value``).

  The Inception and the real statistics are loaded (``load(config)``) at the first evaluation, so a run that never
  reaches one pays nothing; where they cannot be had, that is logged and the run goes on without FID.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: epath.Path,
               load: Callable[[ml_collections.ConfigDict], FIDModel] | None = None):
    self._config = config
    self._load = load
    self._model: FIDModel | None = None
    self.every = config.evaluation.every
    self.num_samples = config.evaluation.num_samples
    self.max_time_fraction = config.evaluation.max_time_fraction
    self.metric = f"fid_{self.num_samples}"
    self.best_directory = epath.Path(workdir) / workdir_lib.BEST_CHECKPOINT_DIRNAME
    self._spent = 0.0
    self._load_seconds = 0.0
    self._last_cost: float | None = None
    self.best_step: int | None = None
    self.best_value = float("inf")
    record = best_state_record(workdir)
    if record is not None and record["metric"] == self.metric:  # another N is another metric: the best starts anew
      self.best_step, self.best_value = record["step"], record["value"]

  def forget_best_after(self, step: int) -> None:
    """A run resumed from ``step`` redoes what followed it, so a best found later is not a best of this run."""
    if self.best_step is not None and self.best_step > step:
      self.best_step, self.best_value = None, float("inf")

  def due(self, step: int, *, run_seconds: float) -> bool | None:
    """True when an evaluation is due at ``step`` and within budget; None when due but postponed; False otherwise."""
    if not schedule.evaluation_due(step, self.every):
      return False
    if self._last_cost is None:
      return True
    run_seconds -= self._load_seconds
    if self._spent + self._last_cost > self.max_time_fraction * (run_seconds + self._last_cost):
      logging.info("FID evaluation at step %d postponed: evaluations took %.0f s of %.0f s, over evaluation."
                   "max_time_fraction=%g", step, self._spent, run_seconds, self.max_time_fraction)
      return None
    return True

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
      # A one-off (the real images' features are cached for every later run): not part of the bounded cost.
      self._load_seconds = time.perf_counter() - start
      logging.info("FID of %d samples every %d steps against %s (loaded in %.0f s)", self.num_samples, self.every,
                   self._model.description, self._load_seconds)
    start = time.perf_counter()
    features = self._model.features(sample(self.num_samples, SAMPLE_SEED))
    mu, sigma = fid_lib.gaussian_statistics(features)
    value = float(fid_lib.frechet_distance(mu, sigma, self._model.real_mu, self._model.real_sigma))
    seconds = time.perf_counter() - start
    self._spent += seconds
    self._last_cost = seconds
    logging.info("step %d: %s=%.2f (%.1f s)", step, self.metric, value, seconds)
    return {self.metric: value, "fid_seconds": seconds}

  def is_new_best(self, value: float) -> bool:
    return value < self.best_value

  def record_best(self, step: int, value: float) -> None:
    """Called once the best checkpoint of ``step`` is complete."""
    self.best_step, self.best_value = step, value
    if jax.process_index() == 0:
      workdir_lib.write_text_whole(self.best_directory / workdir_lib.BEST_RECORD_FILENAME,
                                   json.dumps({"step": step, "metric": self.metric, "value": value}) + "\n")


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
