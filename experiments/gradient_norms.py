r"""The paper's Figure 1b: the gradients of a deep critic explode or vanish with weight clipping, not with the gradient
penalty; and clipping piles the critic's weights up at the ends of its range.

  python -m experiments.gradient_norms --workdir DIR [--steps 300 --width 256 --batch_size 64 --seed 0]

A WGAN learns the Swiss roll (``toy_data``) with the paper's deep networks: generator and critic are MLPs of 12
hidden ReLU layers without batch norm (``models.toy``'s MLPs with ``num_hidden_layers=12``; the paper's are 512 units
wide, ours ``--width``), trained by the library's iteration (``train.make_train_iteration``, ``--n_critic`` critic
updates per generator update, one jitted ``lax.scan`` over ``--steps`` generator iterations) in four settings:

- ``clip_0.1``, ``clip_0.01``, ``clip_0.001``: the original WGAN (``losses.wasserstein_critic_loss``, every critic
  parameter clipped to ``[-c, c]`` after each update by ``losses.clip_weights``) with RMSProp(5e-5) for both
  networks, as ``gan_toy.py``'s ``wgan`` mode;
- ``gp``: WGAN-GP (``losses.wgan_gp_critic_loss``) with ``--gp_weight`` (``gan_toy.py``'s toy LAMBDA, 0.1) and
  Adam(1e-4, b1 0.5, b2 0.9) for both networks, as ``gan_toy.py``'s ``wgan-gp`` mode.

After training, on one evaluation batch (``--batch_size`` real points and as many generated ones), the norm of the
gradient of the critic's Wasserstein loss ``mean D(fake) - mean D(real)`` with respect to each hidden layer's
activations (the ReLU outputs of the whole batch, one Frobenius norm per layer), layer 1 on the input side, 12 on the
output side. Every random number is folded from ``--seed`` (``train.Stream``); a rerun is bit-identical.

Writes ``DIR/gradient_norms.json`` (``{"clip_0.1": [12 norms], "clip_0.01": [...], "clip_0.001": [...], "gp":
[...]}``), ``DIR/gradient_norms_settings.json`` (the settings, and per setting the mean input-gradient norm on
interpolates, the largest absolute critic parameter, the share of critic weights at the clipping bound, the weight
histogram (for ``gp`` over the central 99.9% of the weights) and the training seconds) and ``DIR/gradient_norms.png``
(log10 of the norms against the layer, and the histograms of the weights of the critics clipped at 0.01 and trained
with the penalty).
"""

import functools
import json
import pathlib
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from absl import app, flags

from experiments import cli
from wgan_gp_jax import losses, objectives, toy_data, train
from wgan_gp_jax.models import Models
from wgan_gp_jax.models.toy import ToyCritic, ToyGenerator
from wgan_gp_jax.optimizers import Optimizers
from wgan_gp_jax.runner import host

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for gradient_norms.png, .json and _settings.json.")
_STEPS = flags.DEFINE_integer("steps", 300, "Generator iterations per setting.", lower_bound=1)
_WIDTH = flags.DEFINE_integer("width", 256, "Units of each hidden layer of both networks (the paper's: 512).",
                              lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Points per batch (gan_toy.py: 256).", lower_bound=2)
_N_CRITIC = flags.DEFINE_integer("n_critic", 5, "Critic updates per generator update (gan_toy.py: 5).", lower_bound=1)
_GP_WEIGHT = flags.DEFINE_float("gp_weight", 0.1, "The penalty's lambda (gan_toy.py's toy setting: 0.1).",
                                lower_bound=0.0)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of every random number.")
flags.mark_flags_as_required(["workdir"])

HIDDEN_LAYERS = 12
DATASET = "swissroll"
CLIP_VALUES = (0.1, 0.01, 0.001)
SETTINGS = tuple(f"clip_{c:g}" for c in CLIP_VALUES) + ("gp",)
HISTOGRAM_SETTINGS = ("clip_0.01", "gp")
HISTOGRAM_BINS = 50
_EVALUATION = 1  # fold_in constant of the evaluation batch's key, beside the run's streams


def clip_value(setting: str) -> float | None:
  """``c`` of a ``clip_<c>`` setting; None for ``gp``."""
  return float(setting.removeprefix("clip_")) if setting.startswith("clip_") else None


def deep_models(width: int) -> Models:
  """The paper's deep toy networks: generator and critic with ``HIDDEN_LAYERS`` hidden ReLU layers of ``width``."""
  return Models(generator=ToyGenerator(hidden=width, num_hidden_layers=HIDDEN_LAYERS),
                critic=ToyCritic(hidden=width, num_hidden_layers=HIDDEN_LAYERS), latent_dim=2, sample_shape=(2,))


def wasserstein_critic_loss(critic_fn: losses.CriticFn, real: jax.Array, fake: jax.Array,
                            key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The original WGAN's critic loss ``mean D(fake) - mean D(real)`` and its metrics, as an ``Objective`` takes it."""
  del key  # no random points
  real_scores, fake_scores = losses.critic_scores(critic_fn, real), losses.critic_scores(critic_fn, fake)
  loss = losses.wasserstein_critic_loss(real_scores, fake_scores)
  return loss, losses.critic_metrics(loss, real_scores, fake_scores)


def training_parts(setting: str, gp_weight: float) -> tuple[objectives.Objective, Optimizers]:
  """The objective and ``gan_toy.py``'s optimizers of ``setting`` (one of ``SETTINGS``), built from ``losses``."""
  c = clip_value(setting)
  if c is not None:
    rmsprop = optax.rmsprop(5e-5)
    objective = objectives.Objective(setting, wasserstein_critic_loss, losses.wasserstein_generator_loss,
                                     critic_constraint=functools.partial(losses.clip_weights, clip_value=c))
    return objective, Optimizers(generator=rmsprop, critic=rmsprop)
  if setting != "gp":
    raise ValueError(f"unknown setting {setting!r}; choose one of {SETTINGS}.")
  adam = optax.adam(1e-4, b1=0.5, b2=0.9)
  objective = objectives.Objective(setting, functools.partial(losses.wgan_gp_critic_loss, gp_weight=gp_weight),
                                   losses.wasserstein_generator_loss)
  return objective, Optimizers(generator=adam, critic=adam)


@functools.partial(jax.jit, static_argnames=("setting", "width", "steps", "batch_size", "n_critic", "gp_weight"))
def train_setting(setting: str, *, width: int, steps: int, batch_size: int, n_critic: int, gp_weight: float,
                  seed: int) -> tuple[train.TrainState, dict[str, jax.Array]]:
  """The state after ``steps`` generator iterations of ``setting`` on the Swiss roll, and each iteration's metrics:
  a pure function of its arguments, one ``lax.scan`` of ``train.make_train_iteration``."""
  models = deep_models(width)
  objective, optimizers = training_parts(setting, gp_weight)
  iteration = train.make_train_iteration(models, objective, optimizers, n_critic=n_critic)

  def body(state, _):
    data_key = train.stream_key(state.key, train.Stream.DATA, state.step)
    real = toy_data.sample(DATASET, data_key, n_critic * batch_size).reshape(n_critic, batch_size, 2)
    return iteration(state, real)

  return jax.lax.scan(body, train.init_state(models, optimizers, seed=seed, ema=False), length=steps)


def scaled_norm(x: jax.Array) -> jax.Array:
  """The Euclidean norm of all of ``x``, computed as ``max|x| * ||x / max|x|||`` so that squares of tiny (vanished)
  gradients do not underflow to 0."""
  scale = jnp.max(jnp.abs(x))
  return scale * jnp.sqrt(jnp.sum(jnp.square(x / jnp.where(scale > 0, scale, 1.0))))


def activation_gradient_norms(critic: nn.Module, critic_params: Any, real: jax.Array,
                              fake: jax.Array) -> jax.Array:
  """``(num_hidden_layers,)``: the norm of the gradient of ``mean D(fake) - mean D(real)`` with respect to each hidden
  layer's activations (of the whole batch ``[real; fake]``), the input side first.

  The activations of hidden layer ``k`` are the input of the critic's ``k+1``-th ``nn.Dense`` call: a zero added
  there (by ``nn.intercept_methods``) has the loss's gradient with respect to them as its gradient.
  """
  batch = jnp.concatenate([real, fake])
  zeros = jnp.zeros((critic.num_hidden_layers, batch.shape[0], critic.hidden), batch.dtype)

  def loss(perturbations):
    dense_calls = []

    def add_perturbation(next_fun, args, kwargs, context):
      if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
        dense_calls.append(context.module.name)
        if len(dense_calls) > 1:  # the first Dense reads the points themselves
          args = (args[0] + perturbations[len(dense_calls) - 2],) + tuple(args[1:])
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(add_perturbation):
      scores = critic.apply({"params": critic_params}, batch)
    if len(dense_calls) != critic.num_hidden_layers + 1:
      raise ValueError(f"expected {critic.num_hidden_layers + 1} Dense layers, found {dense_calls}.")
    return losses.wasserstein_critic_loss(scores[:real.shape[0]], scores[real.shape[0]:])

  return jax.vmap(scaled_norm)(jax.grad(loss)(zeros))


def histogram_range(weights: np.ndarray, c: float | None) -> tuple[float, float]:
  """The weights' range for a clipped critic (``c`` given); for an unclipped one, ``+-`` the 99.9th percentile of
  ``|w|``, so that a few large first-layer weights (fan-in 2) do not squash the histogram."""
  if c is not None:
    return float(np.min(weights)), float(np.max(weights))
  bound = float(np.quantile(np.abs(weights), 0.999))
  return -bound, bound


def share_at_bound(weights: np.ndarray, c: float) -> float:
  """The share of ``weights`` within 1% of the clipping bound ``+-c``."""
  return float(np.mean(np.abs(weights) >= 0.99 * c))


def critic_weights(critic_params: Any) -> jax.Array:
  """Every entry of the critic's kernels (its biases left out), flattened."""
  kernels = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(critic_params)
             if getattr(path[-1], "key", None) == "kernel"]
  return jnp.concatenate([kernel.ravel() for kernel in kernels])


def evaluation_key(state: train.TrainState) -> jax.Array:
  """The key of a trained state's evaluation batch: its data stream at its last step, folded once more."""
  return jax.random.fold_in(train.stream_key(state.key, train.Stream.DATA, state.step), _EVALUATION)


@functools.partial(jax.jit, static_argnames=("width", "batch_size"))
def evaluate(generator_params: Any, critic_params: Any, key: jax.Array, *, width: int,
             batch_size: int) -> dict[str, jax.Array]:
  """The numbers of one trained setting (``deep_models(width)``'s parameters) on one evaluation batch drawn with
  ``key``: ``batch_size`` real points and as many generated ones."""
  models = deep_models(width)
  real_key, latent_key, interpolation_key = jax.random.split(key, 3)
  real = toy_data.sample(DATASET, real_key, batch_size)
  fake, _ = train.generate(models, generator_params, {},
                           jax.random.normal(latent_key, (batch_size, models.latent_dim)), train=False)
  critic_fn = train.critic_fn(models, critic_params)
  interpolates = losses.random_interpolates(real, fake, interpolation_key)
  return {
      "activation_gradient_norms": activation_gradient_norms(models.critic, critic_params, real, fake),
      "input_gradient_norm_interpolates": jnp.mean(losses.per_example_norm(
          losses.input_gradients(critic_fn, interpolates))),
      "max_abs_critic_parameter": jnp.max(jnp.stack([jnp.max(jnp.abs(p)) for p in jax.tree.leaves(critic_params)])),
      "critic_weights": critic_weights(critic_params),
  }


def draw_figure(path: pathlib.Path, norms: dict[str, list[float]], weights: dict[str, np.ndarray]) -> None:
  """log10 of each setting's norms against the layer; beside it the weight histograms of ``HISTOGRAM_SETTINGS``."""
  fig, axes = plt.subplots(1, 1 + len(HISTOGRAM_SETTINGS), figsize=(15, 4.5),
                           gridspec_kw={"width_ratios": [1.6] + [1] * len(HISTOGRAM_SETTINGS)})
  layers = np.arange(1, HIDDEN_LAYERS + 1)
  for setting, values in norms.items():
    c = clip_value(setting)
    label = f"weight clipping, c = {c:g}" if c is not None else "gradient penalty"
    axes[0].plot(layers, np.log10(np.maximum(values, np.finfo(np.float32).tiny)), marker="o", label=label)
  axes[0].set_xlabel("critic layer (1 = input side, 12 = output side)")
  axes[0].set_ylabel("log10 of the gradient norm")
  axes[0].set_xticks(layers)
  axes[0].set_title("Gradient of the critic's loss w.r.t. each layer's activations", fontsize=10)
  axes[0].grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  for ax, setting in zip(axes[1:], HISTOGRAM_SETTINGS):
    c = clip_value(setting)
    ax.hist(weights[setting], bins=HISTOGRAM_BINS, range=histogram_range(weights[setting], c),
            color="tab:blue" if c is not None else "tab:red")
    ax.set_title(f"critic weights, weight clipping c = {c:g}" if c is not None
                 else "critic weights, gradient penalty (99.9% of them)", fontsize=10)
    ax.set_xlabel("weight")
    ax.set_ylabel("count")
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
  norms, weights, per_setting = {}, {}, {}
  # The critic's weights before training (the same for every setting): how many the first clipping puts at the bound.
  initial_state = train.init_state(deep_models(_WIDTH.value), training_parts("gp", _GP_WEIGHT.value)[1],
                                   seed=_SEED.value, ema=False)
  initial_weights = np.asarray(critic_weights(initial_state.critic_params))
  for setting in SETTINGS:
    setting_started = time.perf_counter()
    state, metrics = train_setting(setting, width=_WIDTH.value, steps=_STEPS.value, batch_size=_BATCH_SIZE.value,
                                   n_critic=_N_CRITIC.value, gp_weight=_GP_WEIGHT.value, seed=_SEED.value)
    evaluation = jax.device_get(evaluate(state.generator_params, state.critic_params, evaluation_key(state),
                                         width=_WIDTH.value, batch_size=_BATCH_SIZE.value))
    norms[setting] = [float(value) for value in evaluation["activation_gradient_norms"]]
    weights[setting] = np.asarray(evaluation["critic_weights"])
    c = clip_value(setting)
    counts, edges = np.histogram(weights[setting], bins=HISTOGRAM_BINS, range=histogram_range(weights[setting], c))
    tail = {key: float(np.mean(np.asarray(value)[-max(1, _STEPS.value // 10):])) for key, value in metrics.items()}
    per_setting[setting] = {
        "input_gradient_norm_interpolates": float(evaluation["input_gradient_norm_interpolates"]),
        "max_abs_critic_parameter": float(evaluation["max_abs_critic_parameter"]),
        "share_of_weights_at_bound": share_at_bound(weights[setting], c) if c is not None else None,
        "share_of_initial_weights_at_bound_once_clipped": (share_at_bound(initial_weights, c) if c is not None
                                                           else None),
        "weight_histogram": {"counts": counts.tolist(), "edges": edges.tolist(),
                             "share_outside": float(1 - counts.sum() / weights[setting].size)},
        "training_metrics_last_tenth": tail,
        "seconds": round(time.perf_counter() - setting_started, 2),
    }
    print(f"{setting:10s} log10 norms (input side -> output side): "
          f"{' '.join(f'{np.log10(max(v, 1e-45)):.1f}' for v in norms[setting])}", flush=True)
  draw_figure(workdir / "gradient_norms.png", norms, weights)
  (workdir / "gradient_norms.json").write_text(json.dumps(norms, indent=2) + "\n")
  cpu = host.cpu_info()
  settings = {
      "settings": {
          "dataset": DATASET, "hidden_layers": HIDDEN_LAYERS, "width": _WIDTH.value, "steps": _STEPS.value,
          "batch_size": _BATCH_SIZE.value, "n_critic": _N_CRITIC.value, "seed": _SEED.value,
          "clip": {"clip_values": list(CLIP_VALUES), "optimizer": "rmsprop(5e-5), both networks"},
          "gp": {"gp_weight": _GP_WEIGHT.value, "optimizer": "adam(1e-4, b1=0.5, b2=0.9), both networks"},
          "norm": "Frobenius norm over the evaluation batch [real; fake] of d(mean D(fake) - mean D(real)) / d h_k, "
                  "h_k the ReLU output of hidden layer k (1 = input side)",
      },
      "per_setting": per_setting,
      "seconds": round(time.perf_counter() - started, 2),
      "cpu": {key: cpu[key] for key in ("model", "family", "model_number", "cores")},
  }
  (workdir / "gradient_norms_settings.json").write_text(json.dumps(settings, indent=2) + "\n")
  print(f"wrote {workdir / 'gradient_norms.png'}, gradient_norms.json and gradient_norms_settings.json in "
        f"{settings['seconds']} s")


if __name__ == "__main__":
  cli.run(main)
