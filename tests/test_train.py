import os
import pathlib
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.configs import common
from wgan_gp_jax import configuration, objectives, toy_data
from wgan_gp_jax.runner import experiment
from wgan_gp_jax import train as train_lib
from wgan_gp_jax.metrics import toy
from wgan_gp_jax.models import Models, build_models
from wgan_gp_jax.optimizers import Optimizers

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny_toy_config(**overrides):
  """``overrides`` as dotted keys: ``tiny_toy_config(**{"ema.enabled": True})``."""
  defaults = {
      "model.width": 64, "batch_size": 64, "num_steps": 20, "logging.log_every": 10, "logging.figure_every": 10**6,
      "checkpoint.every": 10,
  }
  for network in ("critic", "generator"):
    defaults[f"{network}.learning_rate"] = 1e-3
    defaults[f"{network}.linear_decay"] = False  # so that a 10-step run resumed to 20 steps has the 20-step schedule
  return configuration.override(common.toy_config("8gaussians"), {**defaults, **overrides})


def _init_state(config, models):
  parts = configuration.training_parts(config)
  return train_lib.init_state(models, parts.optimizers, seed=config.seed, ema=parts.ema is not None)


def _mean_distance_to_modes(samples: np.ndarray) -> float:
  centres = toy_data.MIXTURES["8gaussians"].centres
  return float(np.linalg.norm(samples[:, None] - centres[None], axis=-1).min(axis=1).mean())


def test_state_is_one_pytree_with_everything_a_run_needs():
  config = tiny_toy_config()
  state = _init_state(config, build_models(config))
  assert set(vars(state)) == {"step", "key", "generator_params", "generator_batch_stats", "critic_params",
                              "generator_opt_state", "critic_opt_state", "ema_params", "ema_batch_stats"}
  assert state.key.dtype == np.uint32 and int(state.step) == 0


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_short_toy_run_learns_all_modes(tmp_path, dtype):
  config = tiny_toy_config(**{
      "num_steps": 500, "checkpoint.every": 500, "logging.log_every": 250, "critic.learning_rate": 2e-3,
      "generator.learning_rate": 2e-3, "critic.linear_decay": True, "generator.linear_decay": True,
      "model.dtype": dtype})
  untrained = experiment.Run(config, build_models(config), _init_state(config, build_models(config)))
  before = _mean_distance_to_modes(untrained.sample(1000, seed=5))
  run = experiment.train_and_evaluate(config, tmp_path)
  samples = run.sample(1000, seed=5)
  after = _mean_distance_to_modes(samples)
  assert after < 0.4 * before, (before, after)
  # Untrained: 1 or 2 modes, 0.1-0.4% of the samples within 3 std of one. Trained (seeds 0, 1, 2): 8 modes, 13-38%
  # in bfloat16, 13% (seed 0) in float32; longer runs put more there.
  mixture = toy_data.MIXTURES["8gaussians"]
  coverage = toy.mode_coverage(samples, mixture.centres, mixture.std)
  assert coverage["modes_covered"] == 8 and coverage["high_quality_fraction"] > 0.05, coverage
  assert {leaf.dtype for leaf in jax.tree.leaves(run.state) if jnp.issubdtype(leaf.dtype, jnp.floating)} == {
      jnp.dtype(jnp.float32)}
  assert (tmp_path / "metrics.jsonl").read_text().count("wasserstein_estimate") == 2


def test_same_seed_gives_bit_identical_samples_and_resume_is_exact(tmp_path):
  first = experiment.train_and_evaluate(tiny_toy_config(), tmp_path / "a").sample(256, seed=1)
  # The same seed in a second run, ten steps, stopped, then resumed to twenty in the same work directory: bit for bit
  # the first run (neither another run of the seed nor the resume may change anything).
  halfway = experiment.train_and_evaluate(tiny_toy_config(num_steps=10), tmp_path / "resumed").sample(256, seed=1)
  resumed = experiment.train_and_evaluate(tiny_toy_config(), tmp_path / "resumed")
  np.testing.assert_array_equal(resumed.sample(256, seed=1), first)
  other_seed = experiment.train_and_evaluate(tiny_toy_config(seed=1, num_steps=10), tmp_path / "c")
  assert not np.array_equal(other_seed.sample(256, seed=1), halfway)


_MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
    import jax, numpy as np
    from experiments.configs import common
    from wgan_gp_jax import configuration
    from wgan_gp_jax import train as train_lib
    from wgan_gp_jax.models import build_models

    assert jax.device_count() == 8
    from jax.sharding import NamedSharding, PartitionSpec as P
    from wgan_gp_jax import losses
    critic = lambda x: jax.numpy.sum(jax.numpy.tanh(x) ** 2, axis=(1, 2, 3))
    penalty = jax.jit(lambda r, f: losses.wgan_gp_critic_loss(critic, r, f, jax.random.key(0)))
    real, fake = np.random.default_rng(1).normal(size=(2, 16, 4, 4, 3)).astype(np.float32)
    by_example = NamedSharding(train_lib.make_mesh(8), P("data"))
    unsharded = penalty(real, fake)
    sharded = penalty(jax.device_put(real, by_example), jax.device_put(fake, by_example))
    for a, b in zip(jax.tree.leaves(unsharded), jax.tree.leaves(sharded)):
      np.testing.assert_allclose(a, b, rtol=1e-6)
    print("losses equal on sharded inputs")
    # Adam's first steps move every parameter by about +-lr whatever its gradient's size, so gradients that are
    # rounding noise (a sum that cancels, e.g. the critic's last bias) differ in sign between reduction orders.
    # SGD keeps the comparison about what sharding changes: the losses, gradients and batch statistics.
    sgd = {"critic.name": "sgd", "critic.learning_rate": 1e-2, "generator.name": "sgd", "generator.learning_rate": 1e-2}
    image = configuration.default_config("image")
    small_image = {"model.width": 8, "data.resolution": 16, "batch_size": 16, "n_critic": 2, **sgd}
    configs = {
        "toy": configuration.override(common.toy_config("25gaussians"), {"model.width": 32, "batch_size": 16, **sgd}),
        "dcgan with EMA and DiffAugment": configuration.override(image, {
            **small_image, "ema.enabled": True, "ema.half_life_kimg": 0.05, "augment.policy": "color,translation,cutout"}),
        "class-conditional dcgan (AC-GAN)": configuration.override(image, {**small_image, "model.num_classes": 3}),
    }
    for name, config in configs.items():
      models = build_models(config)
      parts = configuration.training_parts(config)
      real = np.random.default_rng(0).uniform(-1, 1, (config.n_critic, config.batch_size) + models.sample_shape)
      labels = np.random.default_rng(2).integers(0, 3, (config.n_critic, config.batch_size)).astype(np.int32)
      results = []
      for devices in (1, 8):
        mesh = train_lib.make_mesh(devices)
        state = train_lib.init_state(models, parts.optimizers, seed=config.seed, ema=parts.ema is not None)
        state = jax.device_put(state, train_lib.replicated(mesh))
        iteration = train_lib.compile_train_iteration(models, parts.objective, parts.optimizers, mesh,
                                                      n_critic=config.n_critic, augmentation=parts.augmentation,
                                                      ema=parts.ema, conditioning=parts.conditioning)
        batch = jax.device_put(real.astype(np.float32), train_lib.iteration_data_sharding(mesh))
        if parts.conditioning is not None:  # the labels sharded as their images
          batch = (batch, jax.device_put(labels, train_lib.iteration_data_sharding(mesh)))
        for _ in range(2):
          state, metrics = iteration(state, batch)
        assert all(len(leaf.sharding.device_set) == devices for leaf in jax.tree.leaves(batch))
        results.append(jax.device_get((state, metrics)))
      (one, one_metrics), (eight, eight_metrics) = results
      for a, b in zip(jax.tree.leaves((one, one_metrics)), jax.tree.leaves((eight, eight_metrics))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
      print(name, "equal on 1 and 8 devices")
""")


def test_iteration_on_eight_devices_equals_one_device():
  env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
  result = subprocess.run([sys.executable, "-c", _MULTI_DEVICE_SCRIPT], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  assert result.stdout.count("equal on 1 and 8 devices") == 3
  assert "losses equal on sharded inputs" in result.stdout


def test_iteration_checks_the_number_of_critic_batches():
  config = tiny_toy_config()
  models = build_models(config)
  parts = configuration.training_parts(config)
  iteration = train_lib.make_train_iteration(models, parts.objective, parts.optimizers, n_critic=config.n_critic)
  state = _init_state(config, models)
  with pytest.raises(ValueError, match="n_critic=5"):
    iteration(state, np.zeros((4, 64, 2), np.float32))


class _LineGenerator(nn.Module):
  """Another project's generator: ``x = W z + b``, no batch norm."""

  @nn.compact
  def __call__(self, z, train=True):
    del train
    return nn.Dense(2)(z)


class _SmallCritic(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(1)(jnp.tanh(nn.Dense(8)(x)))[:, 0]


_DRIFT_WEIGHT = 0.25


def _drift_critic_loss(critic_fn, real, fake, key):
  """A project's own critic loss: Wasserstein with a penalty on the real scores' square; ``key`` unused."""
  del key
  real_scores, fake_scores = critic_fn(real), critic_fn(fake)
  drift = jnp.mean(jnp.square(real_scores))
  loss = jnp.mean(fake_scores) - jnp.mean(real_scores) + _DRIFT_WEIGHT * drift
  return loss, {"critic_loss": loss, "drift": drift}


def test_a_projects_own_objective_and_optimizers_train_as_a_plain_loop_of_their_updates():
  models = Models(_LineGenerator(), _SmallCritic(), latent_dim=3, sample_shape=(2,))
  objective = objectives.Objective("drift_wgan", _drift_critic_loss, lambda scores: -jnp.mean(scores))
  optimizers = Optimizers(generator=optax.sgd(0.05), critic=optax.adam(0.01))
  n_critic, batch_size, steps = 3, 16, 4
  initial = train_lib.init_state(models, optimizers, seed=7, ema=False)
  real = jax.random.normal(jax.random.key(1), (steps, n_critic, batch_size, 2)) + jnp.array([2.0, -1.0])
  iteration = jax.jit(train_lib.make_train_iteration(models, objective, optimizers, n_critic=n_critic))
  state = initial
  drifts = []
  for step in range(steps):
    state, metrics = iteration(state, real[step])
    drifts.append(metrics["drift"])
  assert int(state.step) == steps and set(metrics) == {"critic_loss", "drift", "critic_grad_norm", "generator_loss",
                                                       "generator_grad_norm"}

  # The same updates written out: the keys of train.Stream.TRAIN, the custom losses, optax's steps.
  critic, generator = initial.critic_params, initial.generator_params
  critic_opt, generator_opt = optimizers.critic.init(critic), optimizers.generator.init(generator)
  D = lambda params, x: models.critic.apply({"params": params}, x)
  G = lambda params, z: models.generator.apply({"params": params}, z)
  expected_drifts = []
  for step in range(steps):
    step_key = train_lib.stream_key(initial.key, train_lib.Stream.TRAIN, step)
    step_drifts = []
    for t in range(n_critic):
      z_key, _ = jax.random.split(jax.random.fold_in(step_key, t))
      fake = G(generator, jax.random.normal(z_key, (batch_size, 3)))
      x = real[step, t]

      def critic_loss(w):
        drift = jnp.mean(jnp.square(D(w, x)))
        return jnp.mean(D(w, fake)) - jnp.mean(D(w, x)) + _DRIFT_WEIGHT * drift, drift

      gradient, drift = jax.grad(critic_loss, has_aux=True)(critic)
      step_drifts.append(drift)
      updates, critic_opt = optimizers.critic.update(gradient, critic_opt, critic)
      critic = optax.apply_updates(critic, updates)
    expected_drifts.append(np.mean(step_drifts))
    z = jax.random.normal(jax.random.fold_in(step_key, n_critic), (batch_size, 3))
    gradient = jax.grad(lambda theta: -jnp.mean(D(critic, G(theta, z))))(generator)
    updates, generator_opt = optimizers.generator.update(gradient, generator_opt, generator)
    generator = optax.apply_updates(generator, updates)

  for ours, plain in ((state.critic_params, critic), (state.generator_params, generator)):
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(plain), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(drifts, expected_drifts, rtol=1e-5)
  # The penalty is part of what the critic minimised: without it the critic ends elsewhere.
  no_drift = objectives.Objective("wgan", lambda critic_fn, real, fake, key: (
      jnp.mean(critic_fn(fake)) - jnp.mean(critic_fn(real)), {}), objective.generator_loss)
  other = initial
  other_iteration = jax.jit(train_lib.make_train_iteration(models, no_drift, optimizers, n_critic=n_critic))
  for step in range(steps):
    other, _ = other_iteration(other, real[step])
  assert not np.allclose(jax.tree.leaves(other.critic_params)[0], jax.tree.leaves(state.critic_params)[0], atol=1e-4)


def test_train_and_sample_commands(command_env, tmp_path):
  workdir = tmp_path / "run"
  subprocess.run(
      [sys.executable, "-m", "experiments.train", "--config", "experiments/configs/toy_swissroll.py",
       f"--workdir={os.path.relpath(workdir, REPO_ROOT)}", "--config.num_steps=4", "--config.model.width=16",
       "--config.logging.figure_every=4"],
      cwd=REPO_ROOT, env=command_env, check=True, capture_output=True, timeout=300)
  assert (workdir / "figures" / "step_000004.png").is_file()
  for out in ("s.npz", "s.png"):
    subprocess.run(
        [sys.executable, "-m", "experiments.sample", f"--workdir={workdir}", "--num=50", "--seed=3",
         f"--out={tmp_path / out}"], cwd=REPO_ROOT, env=command_env, check=True, capture_output=True, timeout=300)
  samples = np.load(tmp_path / "s.npz")["samples"]
  assert samples.shape == (50, 2) and samples.dtype == np.float32
  assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
