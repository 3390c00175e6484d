r"""The paper's Figure 1a: value surfaces of WGAN critics trained against a fixed "generator", with weight clipping
(top row) and with the gradient penalty (bottom row), on 8 Gaussians, 25 Gaussians and the Swiss roll.

  python -m experiments.value_surfaces --workdir DIR [--steps 3000 --width 256 --batch_size 256 --seed 0]

As in the authors' ``gan_toy.py`` with ``FIXED_GENERATOR = True``, the fake batch is the real batch plus Gaussian
noise, ``fake = real + 1.0 * N(0, I)`` (the same real points, each moved by fresh noise), and only the critic trains:
``gan_toy.py``'s MLP (three hidden ReLU layers, He initialisation, ``models.toy.ToyCritic``), ``--width`` units wide.

- clipping: ``losses.wasserstein_critic_loss``, RMSProp(5e-5) as ``gan_toy.py``'s ``wgan`` mode (and the WGAN
  paper's Algorithm 1), then every critic parameter clipped to ``[-0.01, 0.01]`` after each update
  (``losses.clip_weights``);
- penalty: ``losses.wgan_gp_critic_loss`` with ``gan_toy.py``'s ``LAMBDA = 0.1`` and Adam(1e-4, b1 0.5, b2 0.9).

Each panel is ``--steps`` critic updates of a batch of ``--batch_size``, in one jitted ``lax.scan``. Every random
number is folded from ``--seed``: the critic's initial parameters (the same for the two rows), the real batches and
their noise (the same for the two rows), the penalty's points and the evaluation batch; a rerun is bit-identical.

Writes ``DIR/value_surfaces.png`` (2 rows x 3 columns: the critic's contours over ``[-3, 3]^2``, the range of
``gan_toy.py``'s pictures, with real points in orange and fake points in green) and ``DIR/value_surfaces.json``: the
settings and, per panel, the critic's value range on the grid, its mean on real and fake points, the Wasserstein
estimate, the mean input-gradient norm on fake, real and interpolated points, the largest absolute parameter and the
training seconds.
"""

import functools
import json
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from absl import app, flags

from experiments import cli
from wgan_gp_jax import losses, toy_data
from wgan_gp_jax.models.toy import ToyCritic
from wgan_gp_jax.runner import host

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for value_surfaces.png and value_surfaces.json.")
_STEPS = flags.DEFINE_integer("steps", 3000, "Critic updates per panel.", lower_bound=1)
_WIDTH = flags.DEFINE_integer("width", 256, "Units of each of the critic's three hidden layers (gan_toy.py: 512).",
                              lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Real (and fake) points per critic update (gan_toy.py: 256).",
                                   lower_bound=2)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of every random number.")
flags.mark_flags_as_required(["workdir"])

DATASETS = ("8gaussians", "25gaussians", "swissroll")
DATASET_TITLES = {"8gaussians": "8 Gaussians", "25gaussians": "25 Gaussians", "swissroll": "Swiss roll"}
METHODS = ("clipping", "penalty")
FIXED_GENERATOR_NOISE_STD = 1.0  # gan_toy.py: real_data + (1. * tf.random_normal(tf.shape(real_data)))
CLIP_VALUE = 0.01  # gan_toy.py's clip_bounds, the WGAN paper's c
GP_WEIGHT = 0.1  # gan_toy.py's LAMBDA
PLOT_RANGE = 3.0  # gan_toy.py's generate_image: RANGE = 3
GRID_POINTS = 128  # gan_toy.py's generate_image: N_POINTS = 128
EVALUATION_POINTS = 1024
PLOTTED_POINTS = 256  # gan_toy.py plots one batch of 256

# The keys folded out of the seed, one per use (the noise of the fakes is split from the data key; 2 is unused).
_INIT, _DATA, _PENALTY, _EVALUATION = 0, 1, 3, 4


def critic_optimizer(method: str) -> optax.GradientTransformation:
  """``gan_toy.py``'s optimizers: RMSProp(5e-5) for weight clipping, Adam(1e-4, b1 0.5, b2 0.9) for the penalty.

  The RMSProp is optax's with its defaults: decay 0.9 as TensorFlow's, eps 1e-8 inside the square root (TF1's
  ``RMSPropOptimizer``: eps 1e-10, the average of squares starting at 1 instead of 0).
  """
  if method == "clipping":
    return optax.rmsprop(5e-5)
  if method == "penalty":
    return optax.adam(1e-4, b1=0.5, b2=0.9)
  raise ValueError(f"unknown method {method!r}; choose one of {METHODS}.")


def fixed_generator_batch(dataset_index: jax.Array | int, key: jax.Array, num: int) -> tuple[jax.Array, jax.Array]:
  """``(real, fake)``, each ``(num, 2)``: real points of ``DATASETS[dataset_index]`` and the same points plus
  ``N(0, I)`` noise. The index may be traced (``lax.switch``): one compiled program serves the three datasets."""
  real_key, noise_key = jax.random.split(key)
  samplers = [functools.partial(lambda name, k: toy_data.sample(name, k, num), name) for name in DATASETS]
  real = jax.lax.switch(dataset_index, samplers, real_key)
  return real, real + FIXED_GENERATOR_NOISE_STD * jax.random.normal(noise_key, real.shape)


def critic_loss(width: int, method: str, params: Any, real: jax.Array, fake: jax.Array,
                key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The loss of ``method`` of the critic ``ToyCritic(hidden=width)`` and its metrics (``losses.critic_metrics``)."""
  critic_fn = functools.partial(ToyCritic(hidden=width).apply, {"params": params})
  if method == "penalty":
    return losses.wgan_gp_critic_loss(critic_fn, real, fake, key, gp_weight=GP_WEIGHT)
  scores = losses.critic_scores(critic_fn, jnp.concatenate([real, fake]))
  real_scores, fake_scores = jnp.split(scores, 2)
  loss = losses.wasserstein_critic_loss(real_scores, fake_scores)
  return loss, losses.critic_metrics(loss, real_scores, fake_scores)


@functools.partial(jax.jit, static_argnames=("width", "method", "steps", "batch_size"))
def train_critic(width: int, dataset_index: jax.Array | int, method: str, *, steps: int, batch_size: int,
                 seed: int) -> tuple[Any, jax.Array]:
  """The parameters of ``ToyCritic(hidden=width)`` after ``steps`` updates of ``method`` against the fixed generator
  on ``DATASETS[dataset_index]``, and the Wasserstein estimate of each update's batch ``(steps,)``: a pure function of
  its arguments, one ``lax.scan``."""
  root = jax.random.key(seed)
  params = ToyCritic(hidden=width).init(jax.random.fold_in(root, _INIT), jnp.zeros((1, 2), jnp.float32))["params"]
  optimizer = critic_optimizer(method)

  def update(carry, step):
    params, opt_state = carry
    real, fake = fixed_generator_batch(dataset_index, jax.random.fold_in(jax.random.fold_in(root, _DATA), step),
                                       batch_size)
    penalty_key = jax.random.fold_in(jax.random.fold_in(root, _PENALTY), step)
    grads, metrics = jax.grad(
        lambda p: critic_loss(width, method, p, real, fake, penalty_key), has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    if method == "clipping":
      params = losses.clip_weights(params, CLIP_VALUE)
    return (params, opt_state), metrics["wasserstein_estimate"]

  (params, _), estimates = jax.lax.scan(update, (params, optimizer.init(params)), jnp.arange(steps))
  return params, estimates


def plot_grid() -> np.ndarray:
  """The ``(GRID_POINTS**2, 2)`` points of the picture, x varying fastest."""
  axis = np.linspace(-PLOT_RANGE, PLOT_RANGE, GRID_POINTS, dtype=np.float32)
  xx, yy = np.meshgrid(axis, axis)
  return np.stack([xx.ravel(), yy.ravel()], axis=1)


@functools.partial(jax.jit, static_argnames=("width",))
def evaluate_critic(width: int, dataset_index: jax.Array | int, params: Any, seed: int) -> dict[str, jax.Array]:
  """The values of the critic ``ToyCritic(hidden=width)`` on ``plot_grid()`` and on an evaluation batch of
  ``DATASETS[dataset_index]``, with the numbers of ``value_surfaces.json``."""
  critic_fn = functools.partial(ToyCritic(hidden=width).apply, {"params": params})
  root = jax.random.key(seed)
  real, fake = fixed_generator_batch(dataset_index, jax.random.fold_in(root, _EVALUATION), EVALUATION_POINTS)
  interpolates = losses.random_interpolates(real, fake, jax.random.fold_in(root, _EVALUATION + 1))
  grid_values = critic_fn(jnp.asarray(plot_grid()))
  real_scores, fake_scores = critic_fn(real), critic_fn(fake)

  def mean_gradient_norm(x):
    return jnp.mean(losses.per_example_norm(losses.input_gradients(critic_fn, x)))

  return {
      "grid_values": grid_values, "real": real, "fake": fake,
      "value_min": jnp.min(grid_values), "value_max": jnp.max(grid_values),
      "mean_real_score": jnp.mean(real_scores), "mean_fake_score": jnp.mean(fake_scores),
      "wasserstein_estimate": jnp.mean(real_scores) - jnp.mean(fake_scores),
      "gradient_norm_fake": mean_gradient_norm(fake), "gradient_norm_real": mean_gradient_norm(real),
      "gradient_norm_interpolates": mean_gradient_norm(interpolates),
      "max_abs_parameter": jnp.max(jnp.stack([jnp.max(jnp.abs(p)) for p in jax.tree.leaves(params)])),
  }


def draw_figure(path: pathlib.Path, panels: dict[tuple[str, str], dict[str, Any]]) -> None:
  """The 2 x 3 figure: rows ``METHODS``, columns ``DATASETS``; contours of each critic, real and fake points."""
  axis = np.linspace(-PLOT_RANGE, PLOT_RANGE, GRID_POINTS)
  fig, axes = plt.subplots(len(METHODS), len(DATASETS), figsize=(5 * len(DATASETS), 5 * len(METHODS)),
                           squeeze=False)
  row_titles = {"clipping": f"weight clipping (c = {CLIP_VALUE:g})",
                "penalty": f"gradient penalty (lambda = {GP_WEIGHT:g})"}
  for row, method in enumerate(METHODS):
    for column, dataset in enumerate(DATASETS):
      ax, panel = axes[row, column], panels[(method, dataset)]
      values = np.asarray(panel["grid_values"]).reshape(GRID_POINTS, GRID_POINTS)
      contours = ax.contour(axis, axis, values, levels=20, cmap="viridis", linewidths=0.8)
      fig.colorbar(contours, ax=ax, shrink=0.8, format="%.2g")
      real, fake = np.asarray(panel["real"])[:PLOTTED_POINTS], np.asarray(panel["fake"])[:PLOTTED_POINTS]
      ax.scatter(real[:, 0], real[:, 1], c="orange", marker="+", s=10, label="real")
      ax.scatter(fake[:, 0], fake[:, 1], c="green", marker="+", s=10, label="fake = real + N(0, 1)")
      ax.set_xlim(-PLOT_RANGE, PLOT_RANGE)
      ax.set_ylim(-PLOT_RANGE, PLOT_RANGE)
      ax.set_aspect("equal")
      ax.set_title(f"{row_titles[method]}: {DATASET_TITLES[dataset]}", fontsize=10)
      if row == 0 and column == 0:
        ax.legend(loc="upper right", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  host.keep_freed_memory()
  workdir = pathlib.Path(_WORKDIR.value)
  workdir.mkdir(parents=True, exist_ok=True)
  started = time.perf_counter()
  panels, numbers = {}, {}
  for method in METHODS:
    for index, dataset in enumerate(DATASETS):
      panel_started = time.perf_counter()
      params, estimates = train_critic(_WIDTH.value, index, method, steps=_STEPS.value, batch_size=_BATCH_SIZE.value,
                                       seed=_SEED.value)
      panels[(method, dataset)] = panel = jax.device_get(evaluate_critic(_WIDTH.value, index, params, _SEED.value))
      tail = np.asarray(estimates)[-max(1, len(estimates) // 10):]
      numbers[f"{method}/{dataset}"] = row = {
          **{key: float(value) for key, value in panel.items() if np.ndim(value) == 0},
          "training_wasserstein_estimate_last_tenth": float(np.mean(tail)),
          "seconds": round(time.perf_counter() - panel_started, 2),
      }
      print(f"{method:9s} {dataset:12s} values [{row['value_min']:.4g}, {row['value_max']:.4g}]  gradient norm on"
            f" fake {row['gradient_norm_fake']:.4g}, on interpolates {row['gradient_norm_interpolates']:.4g}"
            f"  ({row['seconds']} s)", flush=True)
  draw_figure(workdir / "value_surfaces.png", panels)
  cpu = host.cpu_info()
  summary = {
      "settings": {
          "steps": _STEPS.value, "width": _WIDTH.value, "hidden_layers": 3, "batch_size": _BATCH_SIZE.value,
          "seed": _SEED.value, "fixed_generator": f"fake = real + {FIXED_GENERATOR_NOISE_STD:g} * N(0, I)",
          "clipping": {"clip_value": CLIP_VALUE, "optimizer": "rmsprop(5e-5)"},
          "penalty": {"gp_weight": GP_WEIGHT, "optimizer": "adam(1e-4, b1=0.5, b2=0.9)"},
          "plot_range": PLOT_RANGE, "grid_points": GRID_POINTS, "evaluation_points": EVALUATION_POINTS,
      },
      "panels": numbers,
      "seconds": round(time.perf_counter() - started, 2),
      "cpu": {key: cpu[key] for key in ("model", "family", "model_number", "cores")},
  }
  (workdir / "value_surfaces.json").write_text(json.dumps(summary, indent=2) + "\n")
  print(f"wrote {workdir / 'value_surfaces.png'} and {workdir / 'value_surfaces.json'} in {summary['seconds']} s")


if __name__ == "__main__":
  cli.run(main)
