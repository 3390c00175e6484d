r"""The paper's overfitting experiment (section 5.6, Figure 5b): a critic trained on few images tells them from held-out
images of the same distribution, and its loss shows it.

  python -m experiments.overfitting --workdir DIR [--train_digits 1000 --held_out_digits 1000 --steps 1000 \
      --every 100 --width 32 --seed 0 --idx_folder ../shared/data/mnist_t10k]

``--train_digits`` digits drawn at random (``--seed``) from the shared MNIST digits (``data.idx``) are the training
set; ``--held_out_digits`` others are never trained on. The ``mnist.py`` DCGAN (32x32, batch 50, n_critic 5; width 32
and bfloat16 by default, for 20 minutes on 2 CPU cores: ``--width 64`` is the authors' DIM) trains on the training
digits with the library's iteration (``train.make_train_iteration``) in two settings:

- ``gp``: WGAN-GP, lambda 10, Adam(1e-4, 0.5, 0.9) (the authors' ``gan_mnist.py``);
- ``clip``: the original WGAN, weights clipped to [-0.01, 0.01], RMSProp(5e-5).

Every ``--every`` generator steps the critic's negative loss (``-(mean D(fake) - mean D(real) + penalty)``, the
objective's own loss with its penalty) is measured on the training digits and on the held-out digits, with the same
fakes and penalty points for both. A critic that generalises scores both alike; one that memorises its training set
sees its negative loss on the training digits rise above the held-out digits' (the paper: with the penalty the two
stay together far longer than without).

Writes ``DIR/overfitting.json`` (``{"gp": {"steps": [...], "train": [...], "held_out": [...]}, "clip": ...}`` with the
settings, the CPU and the seconds) and ``DIR/overfitting.png`` (the curves).
"""

from __future__ import annotations

import functools
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from absl import app, flags

from experiments import cli
from experiments.configs import mnist
from wgan_gp_jax import configuration, train
from wgan_gp_jax.data import idx, images
from wgan_gp_jax.models import build_models
from wgan_gp_jax.runner import host

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_REPO = pathlib.Path(__file__).resolve().parents[1]
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for overfitting.json and overfitting.png.")
_IDX_FOLDER = flags.DEFINE_string("idx_folder", str(_REPO.parent / "shared" / "data" / "mnist_t10k"),
                                  "A folder of MNIST IDX files.")
_TRAIN_DIGITS = flags.DEFINE_integer("train_digits", 1000, "Digits trained on (the paper: 1,000).", lower_bound=2)
_HELD_OUT_DIGITS = flags.DEFINE_integer("held_out_digits", 1000, "Digits never trained on.", lower_bound=2)
_STEPS = flags.DEFINE_integer("steps", 1000, "Generator steps per setting.", lower_bound=1)
_EVERY = flags.DEFINE_integer("every", 100, "Generator steps between measurements.", lower_bound=1)
_WIDTH = flags.DEFINE_integer("width", 32, "Model width (gan_mnist.py's DIM is 64).", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the digit draw and of every random number of training.")
flags.mark_flags_as_required(["workdir"])

SETTINGS = {
    "gp": {"objective.name": "wgan_gp"},
    "clip": {"objective.name": "wgan_clip", "objective.clip": 0.01, "critic.name": "rmsprop",
             "generator.name": "rmsprop", "critic.learning_rate": 5e-5, "generator.learning_rate": 5e-5},
}
_DRAW, _MEASURE = 10, 11  # fold_in constants of the digit draw and the measurements' keys, beside the run's streams


def split_digits(pixels: np.ndarray, *, train_digits: int, held_out_digits: int, seed: int,
                 resolution: int) -> tuple[np.ndarray, np.ndarray]:
  """Two disjoint random draws of ``pixels`` (uint8 ``(N, H, W)``), resized to ``resolution`` and scaled to [-1, 1]:
  ``(train (train_digits, R, R, 1), held_out (held_out_digits, R, R, 1))``."""
  if train_digits + held_out_digits > len(pixels):
    raise ValueError(f"{train_digits} training and {held_out_digits} held-out digits need more than the"
                     f" {len(pixels)} digits there are")
  order = np.asarray(jax.random.permutation(jax.random.fold_in(jax.random.key(seed), _DRAW), len(pixels)))
  preprocessing = images.Preprocessing(resolution=resolution, crop=1.0, channels=1)
  resized = np.stack([images.preprocess_array(pixels[i], preprocessing, name=f"digit {i}")
                      for i in order[:train_digits + held_out_digits]])
  scaled = resized.astype(np.float32) / 127.5 - 1.0
  return scaled[:train_digits], scaled[train_digits:]


def run_setting(name: str, train_set: np.ndarray, held_out: np.ndarray) -> dict:
  """Trains one setting and measures the critic's negative loss on both sets every ``--every`` steps."""
  config = configuration.override(mnist.get_config(), {**SETTINGS[name], "model.width": _WIDTH.value,
                                                       "model.dtype": "bfloat16", "seed": _SEED.value,
                                                       "num_steps": _STEPS.value})
  models = build_models(config)
  parts = configuration.training_parts(config)
  state = train.init_state(models, parts.optimizers, seed=config.seed, ema=False)
  iteration = train.make_train_iteration(models, parts.objective, parts.optimizers, n_critic=config.n_critic)
  data = jnp.asarray(train_set)
  batch = config.batch_size

  @functools.partial(jax.jit, static_argnums=1)
  def train_chunk(state, steps):
    def body(state, _):
      key = train.stream_key(state.key, train.Stream.DATA, state.step)
      indices = jax.random.randint(key, (config.n_critic, batch), 0, len(data))
      return iteration(state, data[indices])[0], None
    return jax.lax.scan(body, state, None, length=steps)[0]

  @jax.jit
  def negative_losses(state, train_batch, held_out_batch, key):
    z_key, penalty_key = jax.random.split(key)
    z = jax.random.normal(z_key, (len(train_batch), models.latent_dim))
    fake, _ = train.generate(models, state.generator_params, state.generator_batch_stats, z, train=False)
    critic = train.critic_fn(models, state.critic_params)
    return tuple(-parts.objective.critic_loss(critic, real, fake, penalty_key)[0]
                 for real in (train_batch, held_out_batch))

  size = min(len(train_set), len(held_out))
  curve = {"steps": [], "train": [], "held_out": []}
  start = time.perf_counter()
  done = 0
  while done < _STEPS.value:
    steps = min(_EVERY.value, _STEPS.value - done)
    state = train_chunk(state, steps)
    done += steps
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), _MEASURE), done)
    on_train, on_held_out = negative_losses(state, train_set[:size], held_out[:size], key)
    curve["steps"].append(done)
    curve["train"].append(float(on_train))
    curve["held_out"].append(float(on_held_out))
    print(f"{name} step {done}: negative critic loss {float(on_train):.4f} on the training digits,"
          f" {float(on_held_out):.4f} on the held-out ones", flush=True)
  curve["seconds"] = time.perf_counter() - start
  return curve


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    pixels, _ = idx.load_idx_folder(_IDX_FOLDER.value)
    train_set, held_out = split_digits(pixels, train_digits=_TRAIN_DIGITS.value,
                                       held_out_digits=_HELD_OUT_DIGITS.value, seed=_SEED.value, resolution=32)
  except ValueError as error:
    cli.fail(str(error))
  workdir = pathlib.Path(_WORKDIR.value)
  workdir.mkdir(parents=True, exist_ok=True)
  results = {name: run_setting(name, train_set, held_out) for name in SETTINGS}
  results["settings"] = {"train_digits": _TRAIN_DIGITS.value, "held_out_digits": _HELD_OUT_DIGITS.value,
                         "steps": _STEPS.value, "every": _EVERY.value, "width": _WIDTH.value, "seed": _SEED.value,
                         "idx_folder": _IDX_FOLDER.value, "cpu": host.cpu_description()}
  (workdir / "overfitting.json").write_text(json.dumps(results, indent=2) + "\n")
  fig, axes = plt.subplots(1, len(SETTINGS), figsize=(5 * len(SETTINGS), 3.8), squeeze=False)
  for ax, name in zip(axes[0], SETTINGS):
    curve = results[name]
    ax.plot(curve["steps"], curve["train"], label=f"training digits ({_TRAIN_DIGITS.value:,})")
    ax.plot(curve["steps"], curve["held_out"], label=f"held-out digits ({_HELD_OUT_DIGITS.value:,})")
    ax.set_title({"gp": "WGAN-GP", "clip": "WGAN (weight clipping)"}[name])
    ax.set_xlabel("generator step")
    ax.set_ylabel("negative critic loss")
    ax.legend()
  fig.tight_layout()
  fig.savefig(workdir / "overfitting.png", dpi=120)
  print(f"wrote {workdir / 'overfitting.json'} and overfitting.png")


if __name__ == "__main__":
  cli.run(main)
