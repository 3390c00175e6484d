"""Class-conditional runs (the paper's AC-GAN setting): MNIST's IDX files, labels through the pipeline, the AC-GAN terms
against their formulas, the conditional models, and a short run whose generator makes the classes it is asked for."""

import gzip
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from wgan_gp_jax import configuration, train
from wgan_gp_jax.data import idx, images, pipeline, prepare
from wgan_gp_jax.models import build_models, conditional


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
  (tmp_path / "bad" / "x-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + np.array([2], ">u4").tobytes() + b"\x01\x02")
  with pytest.raises(idx.IdxError, match="bytes where an IDX array of shape \\(2, 2, 2\\) takes 20"):
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
  config = _conditional_config(**{"model.name": name})
  models = build_models(config)
  parts = configuration.training_parts(config)
  state = train.init_state(models, parts.optimizers, seed=0, ema=False)
  z = jnp.ones((6, 8))
  samples = {k: train.generate(models, state.generator_params, state.generator_batch_stats, z, train=False,
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
