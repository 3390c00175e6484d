"""Class-conditional runs (the paper's AC-GAN setting): MNIST's IDX files, labels through the pipeline, the AC-GAN terms
against their formulas, the conditional models, and a short run whose generator makes the classes it is asked for."""

import collections
import gzip
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from wgan_gp_jax import configuration, losses, train
from wgan_gp_jax.data import idx, images, pipeline, prepare
from wgan_gp_jax.metrics import classification
from wgan_gp_jax.models import build_models

import program_fingerprints
from checkpoint_testing import REPO_ROOT, assert_same_state, metrics_without_time


def _mnist_data_config(shared_data, data_dir, **data):
  group = dict(dataset="", image_folder="", idx_folder=str(shared_data / "mnist_t10k"), data_dir=str(data_dir),
               resolution=16, channels=1, crop=1.0, random_flip=True, held_out=0)
  return ml_collections.ConfigDict(dict(seed=0, batch_size=8, n_critic=2, data={**group, **data}))


def test_idx_files_are_read_with_their_labels(shared_data, tmp_path):
  pixels, labels = idx.load_idx_folder(shared_data / "mnist_t10k")
  assert pixels.shape == (10_000, 28, 28) and pixels.dtype == np.uint8 and labels.shape == (10_000,)
  assert labels[:5].tolist() == [7, 2, 1, 0, 4] and sorted(set(labels.tolist())) == list(range(10))
  (tmp_path / "bad").mkdir()
  with gzip.open(tmp_path / "bad" / "x-images-idx3-ubyte.gz", "wb") as file:
    file.write(b"\x00\x00\x08\x03" + np.array([2, 2, 2], ">u4").tobytes() + b"\x00" * 7)  # one byte short
  labels_file = tmp_path / "bad" / "x-labels-idx1-ubyte"
  labels_file.write_bytes(b"\x00\x00\x08\x01" + np.array([2], ">u4").tobytes() + b"\x01\x02")
  with pytest.raises(idx.IdxError, match="23 bytes where an IDX array of shape \\(2, 2, 2\\) takes 24"):
    idx.load_idx_folder(tmp_path / "bad")
  with pytest.raises(idx.IdxError, match="must hold one images file"):
    idx.load_idx_folder(tmp_path)


def _labelled_records(shared_data, data_dir):
  """preprocessed image bytes -> label, for every digit of the prepared shared MNIST."""
  import tensorflow_datasets as tfds

  directory = prepare.prepare_idx_folder(shared_data / "mnist_t10k", data_dir=data_dir)
  source = tfds.builder_from_directory(str(directory)).as_data_source(split="train")
  preprocessing = images.Preprocessing(resolution=16, crop=1.0, channels=1)
  table = {}
  for index in range(len(source)):
    record = source[index]
    image = images.preprocess_array(np.asarray(record["image"]), preprocessing, name="digit")
    for pixels in (image, image[:, ::-1]):  # flipped or not
      table.setdefault(pixels.tobytes(), set()).add(int(record["label"]))
  return table


def test_labels_travel_with_their_images_through_flips_shuffles_and_a_resume(shared_data, tmp_path):
  config = _mnist_data_config(shared_data, tmp_path / "tfds")
  table = _labelled_records(shared_data, tmp_path / "tfds")
  iterator = pipeline.make_train_iterator(config, with_labels=True)
  items = [next(iterator) for _ in range(3)]
  state = json.loads(json.dumps(iterator.get_state()))
  after = [next(iterator) for _ in range(2)]
  for item in items + after:
    assert isinstance(item, pipeline.LabelledImages) and item.labels.shape == (2, 8) and item.labels.dtype == np.int32
    for image, label in zip(item.images.reshape(-1, 16, 16, 1), item.labels.reshape(-1)):
      pixels = np.rint((image + 1.0) * 127.5).astype(np.uint8)
      assert int(label) in table[pixels.tobytes()]
  resumed = pipeline.make_train_iterator(config, with_labels=True)
  resumed.set_state(state)
  for expected, item in zip(after, [next(resumed) for _ in range(2)]):
    np.testing.assert_array_equal(item.images, expected.images)
    np.testing.assert_array_equal(item.labels, expected.labels)
  unlabelled = next(pipeline.make_train_iterator(config))
  np.testing.assert_array_equal(unlabelled, items[0].images)  # the same images, without their labels


def test_each_process_reads_its_slice_of_the_labels(shared_data, tmp_path):
  config = _mnist_data_config(shared_data, tmp_path / "tfds")
  whole = next(pipeline.make_train_iterator(config, with_labels=True))
  parts = [next(pipeline.make_train_iterator(config, with_labels=True, process_index=i, process_count=2))
           for i in range(2)]
  np.testing.assert_array_equal(np.concatenate([p.labels for p in parts], axis=1), whole.labels)
  np.testing.assert_array_equal(np.concatenate([p.images for p in parts], axis=1), whole.images)


def _conditional_config(**overrides):
  config = configuration.default_config("image")
  small = {"model.width": 4, "model.latent_dim": 8, "data.resolution": 8, "data.channels": 1, "batch_size": 4,
           "n_critic": 2, "num_steps": 10, "model.num_classes": 3}
  return configuration.override(config, {**small, **overrides})


@pytest.mark.parametrize("name", ["dcgan", "resnet", "gated", "g_mlp"])
def test_conditional_models_take_labels_and_critics_give_scores_and_class_logits(name):
  config = _conditional_config(**{"model.name": name, "data.resolution": 16})
  models = build_models(config)
  parts = configuration.training_parts(config)
  state = train.init_state(models, parts.optimizers, seed=0, ema=False)
  z = jnp.ones((6, 8))
  # Parameters moved off their initial values: the ResNet's per-class batch-norm scales and offsets start equal (1
  # and 0, as the authors'), so at initialisation its classes look alike.
  leaves, tree = jax.tree.flatten(state.generator_params)
  moved = jax.tree.unflatten(tree, [leaf + 0.1 * jax.random.normal(jax.random.key(i), leaf.shape, leaf.dtype)
                                    for i, leaf in enumerate(leaves)])
  samples = {k: train.generate(models, moved, state.generator_batch_stats, z, train=False,
                               labels=jnp.full((6,), k))[0] for k in range(3)}
  assert not np.allclose(samples[0], samples[1])  # the label changes the sample
  outputs = models.critic.apply({"params": state.critic_params}, samples[0])
  assert outputs.shape == (6, 4) and outputs.dtype == jnp.float32
  with pytest.raises(ValueError, match="labels are for class-conditional generators"):
    train.generate(models, state.generator_params, state.generator_batch_stats, z, train=False)


def test_the_acgan_terms_are_the_classifiers_cross_entropy_weighted_as_configured():
  """With SGD at learning rate 1 a critic update is minus the gradient: the AC-GAN term adds ``acgan_scale`` times the
  gradient of the cross-entropy of the critic's class logits on the real batch, computed here by hand."""
  config = _conditional_config(**{"critic.name": "sgd", "critic.learning_rate": 1.0})
  models = build_models(config)
  state = train.init_state(models, configuration.training_parts(config).optimizers, seed=0, ema=False)
  real = jax.random.uniform(jax.random.key(1), (4, 8, 8, 1), minval=-1, maxval=1)
  labels = jnp.array([0, 2, 1, 2])
  updates = {}
  for scale in (0.0, 1.0, 2.0):
    parts = configuration.training_parts(configuration.override(config, {"objective.acgan_scale": scale}))
    update = train.make_critic_update(models, parts.objective, parts.optimizers.critic,
                                      conditioning=parts.conditioning)
    params, _, metrics = update(state, state.critic_params, state.critic_opt_state, real, jax.random.key(2), labels)
    updates[scale] = jax.tree.map(jnp.subtract, params, state.critic_params)

  def cross_entropy(params):
    logits = models.critic.apply({"params": params}, real)[:, 1:]
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels])

  expected = jax.tree.map(jnp.negative, jax.grad(cross_entropy)(state.critic_params))
  for a, b, c, d in zip(*(jax.tree.leaves(t) for t in (updates[0.0], updates[1.0], updates[2.0], expected))):
    np.testing.assert_allclose(b - a, d, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(c - a, 2 * d, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(metrics["acgan_critic_loss"], cross_entropy(state.critic_params), rtol=1e-5)
  logits = models.critic.apply({"params": state.critic_params}, real)[:, 1:]
  np.testing.assert_allclose(metrics["acgan_real_accuracy"], np.mean(np.argmax(logits, -1) == labels))


def test_the_generators_acgan_term_is_the_cross_entropy_on_samples_of_uniformly_drawn_labels():
  """With SGD at learning rate 1 a generator update is minus the gradient: the AC-GAN term adds ``acgan_scale_g`` times
  the gradient of the critic's cross-entropy on the generator's samples, of labels drawn from the update's key."""
  config = _conditional_config(**{"generator.name": "sgd", "generator.learning_rate": 1.0})
  models = build_models(config)
  state = train.init_state(models, configuration.training_parts(config).optimizers, seed=0, ema=False)
  key, batch_size = jax.random.key(4), 6
  updated = {}
  for scale in (0.0, 0.1, 0.3):
    parts = configuration.training_parts(configuration.override(config, {"objective.acgan_scale_g": scale}))
    update = train.make_generator_update(models, parts.objective, parts.optimizers.generator,
                                         conditioning=parts.conditioning)
    updated[scale], metrics = update(state, key, batch_size)
  z = jax.random.normal(key, (batch_size, 8))
  labels = jax.random.randint(jax.random.fold_in(key, train._GENERATOR_LABELS), (batch_size,), 0, 3)
  assert len(set(labels.tolist())) > 1  # drawn, not one class

  def cross_entropy(params):
    samples, _ = train.generate(models, params, state.generator_batch_stats, z, train=True, labels=labels)
    logits = models.critic.apply({"params": state.critic_params}, samples)[:, 1:]
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(batch_size), labels])

  expected = jax.grad(cross_entropy)(state.generator_params)
  steps = {scale: jax.tree.map(jnp.subtract, updated[scale].generator_params, updated[0.0].generator_params)
           for scale in (0.1, 0.3)}
  for scale, step in steps.items():
    for a, b in zip(jax.tree.leaves(step), jax.tree.leaves(expected)):
      np.testing.assert_allclose(a, -scale * b, rtol=1e-3, atol=1e-7)
  np.testing.assert_allclose(metrics["acgan_generator_loss"], cross_entropy(state.generator_params), rtol=1e-5)


def test_the_gradient_penalty_is_on_the_score_alone():
  """The critic's class logits are no part of the penalty's input gradient (the authors' ``gan_cifar_resnet.py``)."""
  config = _conditional_config(**{"objective.name": "wgan_gp"})
  models = build_models(config)
  parts = configuration.training_parts(config)
  state = train.init_state(models, parts.optimizers, seed=0, ema=False)
  real = jax.random.uniform(jax.random.key(1), (4, 8, 8, 1), minval=-1, maxval=1)
  labels, key = jnp.array([0, 2, 1, 2]), jax.random.key(2)
  update = train.make_critic_update(models, parts.objective, parts.optimizers.critic, conditioning=parts.conditioning)
  _, _, metrics = update(state, state.critic_params, state.critic_opt_state, real, key, labels)
  z_key, penalty_key = jax.random.split(key)
  fake, _ = train.generate(models, state.generator_params, state.generator_batch_stats,
                           jax.random.normal(z_key, (4, 8)), train=True, labels=labels)
  outputs = train.critic_fn(models, state.critic_params)
  on_the_score = losses.gradient_penalty(lambda x: outputs(x)[:, 0], real, fake, penalty_key)
  on_everything = losses.gradient_penalty(lambda x: jnp.sum(outputs(x), axis=1), real, fake, penalty_key)
  np.testing.assert_allclose(metrics["gradient_penalty"], on_the_score, rtol=1e-5)
  assert abs(float(on_everything - on_the_score)) > 1e-3 * abs(float(on_the_score))


LEVELS = (-0.7, 0.0, 0.7)


def _three_brightness_classes(rng, count):
  """Images of class k: noise around the grey level ``LEVELS[k]``."""
  labels = rng.integers(0, 3, count).astype(np.int32)
  images = np.asarray(LEVELS, np.float32)[labels][:, None, None, None] + rng.normal(0, 0.15, (count, 8, 8, 1))
  return np.clip(images, -1, 1).astype(np.float32), labels


def test_a_short_conditional_run_makes_the_class_it_is_asked_for():
  """Three classes told apart by their grey level alone: after a short run, the samples asked of each class have
  that class's level (measured on the pixels, not by the run's own classifier)."""
  # The generator's AC-GAN weight at 1 (the authors' 0.1 takes longer to tell the classes apart).
  config = _conditional_config(**{"batch_size": 16, "model.width": 8, "critic.learning_rate": 1e-3,
                                  "generator.learning_rate": 1e-3, "objective.acgan_scale_g": 1.0})
  models = build_models(config)
  parts = configuration.training_parts(config)
  state = train.init_state(models, parts.optimizers, seed=0, ema=False)
  iteration = jax.jit(train.make_train_iteration(models, parts.objective, parts.optimizers, n_critic=2,
                                                 conditioning=parts.conditioning))
  rng = np.random.default_rng(0)
  for _ in range(300):
    images, labels = _three_brightness_classes(rng, 2 * 16)
    state, metrics = iteration(state, (images.reshape(2, 16, 8, 8, 1), labels.reshape(2, 16)))
  z = jax.random.normal(jax.random.key(9), (64, 8))
  levels = [float(jnp.mean(train.generate(models, state.generator_params, state.generator_batch_stats, z,
                                          train=False, labels=jnp.full((64,), k))[0])) for k in range(3)]
  assert all(abs(level - target) < 0.25 for level, target in zip(levels, LEVELS)), levels
  assert float(metrics["acgan_fake_accuracy"]) > 0.9, metrics


# program_fingerprints.fingerprints() on main before labels existed (commit a0d1f4c, 2026-12-07).
UNCONDITIONAL_FINGERPRINTS = {
    "celeba32": {"init": "2967d5c93887ec8c", "iteration": "2dff663222f50e7d", "sampling": "830946856e4e4b8a"},
    "celeba32_gated": {"init": "3639e25e3b53e5ea", "iteration": "cf47876e4dd47d96", "sampling": "b1451201c5c05f9c"},
    "cifar10_resnet": {"init": "38c062ef7159e1b7", "iteration": "4afa4daa5c29b41d", "sampling": "c118e121911a4167"},
    "toy_8gaussians": {"init": "edf9a305bbb6ade0", "iteration": "dee1e3ea0c8e28b1", "sampling": "63ba6673f009bf85"},
}


def test_unconditional_configs_keep_their_initial_parameters_and_programs():
  """Labels changed nothing an unconditional run computes: the same lowered initialisation, training and sampling
  programs as before they existed. A deliberate change to what unconditional runs compute must update
  ``UNCONDITIONAL_FINGERPRINTS`` (and say so in its commit)."""
  assert program_fingerprints.fingerprints() == UNCONDITIONAL_FINGERPRINTS


def _command(env, *args):
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                        timeout=600)


def test_the_conditional_mnist_config_trains_and_samples_a_class_or_a_row_per_class(shared_data, command_env,
                                                                                    tmp_path):
  workdir = tmp_path / "run"
  trained = _command(command_env, "experiments.train", "--config", "experiments/configs/mnist.py:conditional",
                     f"--workdir={workdir}", f"--config.data.idx_folder={shared_data / 'mnist_t10k'}",
                     f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.data.resolution=16",
                     "--config.model.width=4", "--config.batch_size=10", "--config.n_critic=1",
                     "--config.num_steps=2", "--config.evaluation.every=0")
  assert trained.returncode == 0, trained.stderr[-4000:]
  out = _command(command_env, "experiments.sample", f"--workdir={workdir}", "--num=6", "--label=3",
                 f"--out={tmp_path / 'threes.npz'}")
  assert out.returncode == 0, out.stderr[-4000:]
  saved = np.load(tmp_path / "threes.npz")
  assert saved["samples"].shape == (6, 16, 16, 1) and saved["labels"].tolist() == [3] * 6
  grid = _command(command_env, "experiments.sample", f"--workdir={workdir}", "--num=20", f"--out={tmp_path / 'g.png'}")
  assert grid.returncode == 0, grid.stderr[-4000:]
  height, width = np.asarray(Image.open(tmp_path / "g.png")).shape[:2]
  assert height > 4 * width  # ten rows (one per digit) of two samples
  wrong = _command(command_env, "experiments.sample", f"--workdir={workdir}", "--label=10",
                   f"--out={tmp_path / 'x.npz'}")
  assert wrong.returncode == 2 and "Traceback" not in wrong.stderr, wrong.stderr[-3000:]
  assert wrong.stderr.strip().splitlines()[-1] == "error: --label=10: this run's classes are 0 to 9"
  assert not (tmp_path / "x.npz").exists()
  kid = _command(command_env, "experiments.evaluate", f"--workdir={workdir}", "--metrics=kid", "--num_samples=20")
  assert kid.returncode == 2 and kid.stderr.strip().splitlines()[-1] == (
      "error: --metrics=kid: this run's IDX digits are no image folder to compare with: give --reference FOLDER as"
      " well (without it: --metrics=fid, the FID per class)")


def test_the_independent_classifier_tells_digits_of_the_asked_class_from_others(shared_data):
  """Real digits, asked for once as what they are and once as the next digit: the first half scores about the
  classifier's accuracy on real digits, the second about nothing, so the whole about half of it."""
  pixels, labels = idx.load_idx_folder(shared_data / "mnist_t10k")
  digits = pixels[:1300, :, :, None]
  asked = np.concatenate([labels[:300], (labels[:300] + 1) % 10])
  report = classification.independent_accuracy(np.concatenate([digits[:300]] * 2), asked, digits[300:],
                                               labels[300:1300], test_images=200, fit_steps=300)
  assert report["real_accuracy"] > 0.8, report
  assert abs(report["accuracy"] - report["real_accuracy"] / 2) < 0.05, report
  assert report["num_fit"] == 800 and report["num_real_test"] == 200 and len(report["per_class"]) == 10


def test_a_conditional_run_stopped_and_resumed_is_bit_identical(shared_data, tmp_path):
  """The labels' position in the data is saved with the images': 2 steps, then 2 more from the checkpoint, equal 4."""
  from experiments.configs import mnist
  from wgan_gp_jax.runner import experiment

  def config(num_steps):
    return configuration.override(mnist.get_config("conditional"), {
        "data.idx_folder": str(shared_data / "mnist_t10k"), "data.data_dir": str(tmp_path / "tfds"),
        "data.resolution": 16, "model.width": 4, "batch_size": 10, "n_critic": 2, "num_steps": num_steps,
        "checkpoint.every": 2, "logging.figure_every": 100})

  whole = experiment.train_and_evaluate(config(4), tmp_path / "whole")
  experiment.train_and_evaluate(config(2), tmp_path / "resumed")
  resumed = experiment.train_and_evaluate(config(4), tmp_path / "resumed")
  assert int(resumed.state.step) == int(whole.state.step) == 4
  assert_same_state(resumed.state, whole.state)
  np.testing.assert_array_equal(whole.sample(20, seed=1, label=3), resumed.sample(20, seed=1, label=3))
  assert metrics_without_time(tmp_path / "resumed") == metrics_without_time(tmp_path / "whole")


def test_an_idx_runs_held_out_digits_never_reach_the_pipeline_and_are_what_evaluate_classifies_with(shared_data,
                                                                                                   tmp_path):
  """data.held_out of IDX digits: the pipeline reads the first N - K digits (two epochs: each exactly twice, none of
  the last K), and ``labelled_images`` gives evaluate those K with their labels, the rest as the training part."""
  from wgan_gp_jax.metrics import evaluation

  config = _mnist_data_config(shared_data, tmp_path / "tfds", held_out=9_000, random_flip=False)
  pixels, labels = idx.load_idx_folder(shared_data / "mnist_t10k")
  preprocessing = images.Preprocessing(resolution=16, crop=1.0, channels=1)
  digits = [images.preprocess_array(p, preprocessing, name="digit").tobytes() for p in pixels]
  iterator = pipeline.make_train_iterator(config, with_labels=True)
  seen = collections.Counter()
  for _ in range(2 * 1_000 // 16):  # two epochs of 16 digits per item
    item = next(iterator)
    for image, label in zip(item.images.reshape(-1, 16, 16, 1), item.labels.reshape(-1)):
      pixels_bytes = np.rint((image + 1.0) * 127.5).astype(np.uint8).tobytes()
      seen[pixels_bytes, int(label)] += 1
  assert seen == collections.Counter({(d, int(k)): 2 for d, k in zip(digits[:1_000], labels[:1_000])})
  held_out_images, held_out_labels = evaluation.labelled_images(config, part="held_out")
  assert [image.tobytes() for image in held_out_images] == digits[1_000:]
  np.testing.assert_array_equal(held_out_labels, labels[1_000:])
  training_images, training_labels = evaluation.labelled_images(config, part="training")
  assert [image.tobytes() for image in training_images] == digits[:1_000]
  np.testing.assert_array_equal(training_labels, labels[:1_000])


def test_fid_per_class_compares_each_classs_samples_with_the_real_images_of_that_class(shared_data, monkeypatch):
  """With a stand-in feature map (2x2 block means): samples that are real digits of the asked class score the FID of
  two sets of that digit, samples of the next digit score far more, each value is the Frechet distance of that
  class's features; too few samples per class is no number but a reason naming the num_samples needed."""
  from wgan_gp_jax.metrics import evaluation, fid, inception

  def block_means(images, *, params, batch_size=50, preprocessing="pytorch_fid", with_logits=False, kernels="auto"):
    x = np.asarray(images, np.float32)
    return {"pool3": x.reshape(len(x), 2, x.shape[1] // 2, 2, x.shape[2] // 2).mean(axis=(2, 4)).reshape(len(x), -1)}

  monkeypatch.setattr(inception, "inception_features", block_means)
  pixels, labels = idx.load_idx_folder(shared_data / "mnist_t10k")
  real, real_labels = pixels[:5_000, :, :, None], labels[:5_000]
  asked = np.arange(600) % 2  # classes 0 and 1, from digits the real set does not hold
  of_class = {k: pixels[5_000:, :, :, None][labels[5_000:] == k][:300] for k in (0, 1, 2)}
  right = np.stack([of_class[k][i // 2] for i, k in enumerate(asked)])
  wrong = np.stack([of_class[k + 1][i // 2] for i, k in enumerate(asked)])
  scores = {name: evaluation.per_class_fid(fake, asked, real, real_labels, params=None, min_images=300)
            for name, fake in (("right", right), ("wrong", wrong))}
  for k in (0, 1):
    assert scores["right"]["fid"][k] * 5 < scores["wrong"]["fid"][k], scores
    real_features = block_means(real[real_labels == k], params=None)["pool3"]
    fake_features = block_means(wrong[asked == k], params=None)["pool3"]
    expected = fid.frechet_distance(*fid.gaussian_statistics(fake_features), *fid.gaussian_statistics(real_features))
    assert scores["wrong"]["fid"][k] == pytest.approx(expected, rel=1e-6)
  assert scores["right"]["samples_per_class"] == {0: 300, 1: 300}
  assert scores["right"]["mean"] == pytest.approx(np.mean(list(scores["right"]["fid"].values())))
  few = evaluation.per_class_fid(right[:400], asked[:400], real, real_labels, params=None, min_images=300)
  assert "fid" not in few
  assert few["skipped"] == ("a class has 200 of the 400 samples; per-class FID needs 300 (num_samples 600 for 2"
                            " classes)")
