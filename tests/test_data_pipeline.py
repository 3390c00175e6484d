"""Preparing image folders into TFDS datasets and the training iterator, on real CelebA faces and MNIST digits."""

import gzip
import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from wgan_gp_jax.data import images, pipeline, prepare

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NUM_FACES = 96


def _copy_faces(shared_data: pathlib.Path, folder: pathlib.Path, indices: range) -> None:
  folder.mkdir(parents=True, exist_ok=True)
  for index in indices:
    shutil.copy(shared_data / "celeba_10k" / "images" / f"{index:06d}.jpg", folder)


@pytest.fixture(scope="module")
def faces(shared_data, tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
  """(folder, data_dir): 96 real faces and 4 unusable files; the folder is prepared at 32x32 RGB into data_dir."""
  root = tmp_path_factory.mktemp("faces")
  folder = root / "Faces"
  _copy_faces(shared_data, folder, range(1, NUM_FACES + 1))
  (folder / "truncated.jpg").write_bytes((folder / "000001.jpg").read_bytes()[:2000])
  (folder / "notes.txt").write_text("not an image")
  (folder / "empty.png").write_bytes(b"")
  Image.new("RGB", (15, 15), (200, 10, 10)).save(folder / "thumbnail.png")
  data_dir = root / "tensorflow_datasets"
  prepare.prepare_image_folder(folder, resolution=32, data_dir=data_dir)
  return folder, data_dir


def _config(seed: int = 0, batch_size: int = 8, n_critic: int = 2, **data) -> ml_collections.ConfigDict:
  """The config keys the pipeline reads: its ``data`` group (``data`` overrides it) and the loop's batch keys."""
  data_group = dict(dataset="celeb_a", image_folder="", data_dir=None, resolution=32, channels=3,
                    crop=images.DEFAULT_FACE_CROP, random_flip=False)
  return ml_collections.ConfigDict(dict(seed=seed, batch_size=batch_size, n_critic=n_critic,
                                        data={**data_group, **data}))


def _take(iterator, count: int) -> list[np.ndarray]:
  return [next(iterator) for _ in range(count)]


def _rows(items: list[np.ndarray]) -> list[bytes]:
  """Each image of each item, as the bytes of its uint8 pixels, in iteration order."""
  return [np.rint((image + 1.0) * 127.5).astype(np.uint8).tobytes()
          for item in items for image in item.reshape(-1, *item.shape[2:])]


def _expected_faces(folder: pathlib.Path, preprocessing: images.Preprocessing) -> dict[str, bytes]:
  with images.ImageSource.open(folder) as source:
    return {name: result.tobytes() for name, result in images.iter_preprocessed(source, preprocessing)
            if not isinstance(result, images.ImageFileError)}


# Preparation.


def test_preparation_skips_and_reports_unusable_files(faces):
  folder, data_dir = faces
  prepared = prepare.prepare_image_folder(folder, resolution=32, data_dir=data_dir)
  assert not prepared.newly_prepared
  assert prepared.directory.parent.parent == data_dir / "folder_faces"
  assert prepared.directory.parent.name.startswith("32px_crop899_rgb_") and prepared.directory.name == "1.0.0"
  assert prepared.num_examples == NUM_FACES
  assert prepared.report["files"] == NUM_FACES + 4
  assert prepared.report["skipped"] == {"corrupt": 1, "not_an_image": 2, "too_small": 1}
  skipped_files = prepared.report["skipped_files"]
  assert len(skipped_files["corrupt"]) == 1
  assert skipped_files["corrupt"][0].startswith(f"{folder}/truncated.jpg: corrupt or truncated JPEG image: image file"
                                                " is truncated")
  assert [message.split(":")[0] for message in skipped_files["not_an_image"]] == [f"{folder}/empty.png",
                                                                                  f"{folder}/notes.txt"]
  assert skipped_files["too_small"][0].startswith(f"{folder}/thumbnail.png: image is too small (15x15)")
  assert json.loads((prepared.directory / prepare.REPORT_FILENAME).read_text()) == prepared.report
  assert sorted(path.name for path in prepared.directory.parent.iterdir()) == ["1.0.0"]  # No incomplete.* left.


def test_prepared_dataset_is_a_tfds_dataset_of_the_preprocessed_images(faces):
  folder, data_dir = faces
  prepared = prepare.prepare_image_folder(folder, resolution=32, data_dir=data_dir)
  source = tfds.data_source(f"folder_faces/{prepared.directory.parent.name}", data_dir=data_dir, split="train")
  assert source.dataset_info.features["image"].shape == (32, 32, 3)
  records = [source[index] for index in range(len(source))]
  expected = _expected_faces(folder, images.Preprocessing(resolution=32))
  filenames = [record["filename"].decode() for record in records]
  assert sorted(filenames) == sorted(expected) and len(expected) == NUM_FACES
  assert filenames != sorted(filenames)  # Written in a fixed shuffled order, so per-process ranges are uniform.
  for filename, record in zip(filenames, records):
    assert record["image"].dtype == np.uint8 and record["image"].tobytes() == expected[filename]


def test_preparation_is_reused_until_the_folder_changes(shared_data, tmp_path):
  folder = tmp_path / "mine"
  _copy_faces(shared_data, folder, range(200, 210))
  first = prepare.prepare_image_folder(folder, resolution=16, data_dir=tmp_path / "data")
  shard = next(first.directory.glob("*.array_record-*"))
  written_at = shard.stat().st_mtime_ns
  again = prepare.prepare_image_folder(folder, resolution=16, data_dir=tmp_path / "data")
  assert first.newly_prepared and not again.newly_prepared
  assert again.directory == first.directory and shard.stat().st_mtime_ns == written_at
  other_crop = prepare.prepare_image_folder(folder, resolution=16, crop=1.0, data_dir=tmp_path / "data")
  assert other_crop.newly_prepared and other_crop.directory.parent.name.startswith("16px_crop1000_rgb_")
  _copy_faces(shared_data, folder, range(210, 211))
  changed = prepare.prepare_image_folder(folder, resolution=16, data_dir=tmp_path / "data")
  assert changed.newly_prepared and changed.directory != first.directory and changed.num_examples == 11


def test_an_interrupted_preparation_is_never_taken_as_complete(shared_data, tmp_path, monkeypatch):
  folder = tmp_path / "mine"
  _copy_faces(shared_data, folder, range(300, 308))
  data_dir = tmp_path / "data"
  real_iter_preprocessed = images.iter_preprocessed

  def dies_after_three(*args, **kwargs):
    for count, item in enumerate(real_iter_preprocessed(*args, **kwargs)):
      if count == 3:
        raise KeyboardInterrupt("killed mid-preparation")
      yield item

  monkeypatch.setattr(images, "iter_preprocessed", dies_after_three)
  with pytest.raises(KeyboardInterrupt):
    prepare.prepare_image_folder(folder, resolution=16, data_dir=data_dir)
  (config_dir,) = (data_dir / "folder_mine").iterdir()
  assert list(config_dir.iterdir()) == []  # Neither 1.0.0 nor the incomplete directory.
  # What a killed process (no cleanup) leaves behind is ignored, and a new preparation completes.
  leftover = config_dir / "incomplete.0123456789abcdef_1.0.0"
  leftover.mkdir()
  (leftover / "dataset_info.json").write_text("{}")
  monkeypatch.setattr(images, "iter_preprocessed", real_iter_preprocessed)
  prepared = prepare.prepare_image_folder(folder, resolution=16, data_dir=data_dir)
  assert prepared.newly_prepared and prepared.num_examples == 8 and prepared.directory == config_dir / "1.0.0"


def test_folders_without_usable_images_are_clear_errors(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ValueError, match=r"^no files in .*empty: an image folder or zip needs at least one image"):
    prepare.prepare_image_folder(empty, resolution=32, data_dir=tmp_path / "data")
  (empty / "a.txt").write_text("text")
  Image.new("L", (4, 4)).save(empty / "b.png")
  with pytest.raises(ValueError, match=r"none of the 2 files in .*empty is a usable image:\n(.|\n)*b\.png: image is"
                     r" too small \(4x4\)"):
    prepare.prepare_image_folder(empty, resolution=32, data_dir=tmp_path / "data")
  assert not list((tmp_path / "data").rglob("1.0.0"))
  with pytest.raises(FileNotFoundError, match="missing"):
    prepare.prepare_image_folder(tmp_path / "missing", resolution=32, data_dir=tmp_path / "data")


def test_prepare_data_command_converts_a_zip(shared_data, tmp_path):
  archive = tmp_path / "img_align_celeba.zip"
  with zipfile.ZipFile(archive, "w") as zip_file:
    for index in range(1, 13):
      zip_file.write(shared_data / "celeba_10k" / "images" / f"{index:06d}.jpg", f"img_align_celeba/{index:06d}.jpg")
    zip_file.writestr("img_align_celeba/broken.jpg", b"\xff\xd8\xff\xe0 truncated")
  command = [sys.executable, "-m", "experiments.prepare_data", f"--image_folder={archive}", f"--out={tmp_path}/out",
             "--resolution=16", "--channels=1"]
  result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["images"] == 12 and summary["skipped"] == {"corrupt": 1}
  assert f"{archive}:img_align_celeba/broken.jpg: " in result.stderr  # The report names the file.
  dataset_dir = pathlib.Path(summary["dataset_dir"])
  assert dataset_dir.parent.parent == tmp_path / "out" / "folder_img_align_celeba"
  source = tfds.builder_from_directory(os.fspath(dataset_dir)).as_data_source(split="train")
  assert len(source) == 12 and source[0]["image"].shape == (16, 16, 1)


# The training iterator.


def test_items_have_the_documented_shape_and_range(faces):
  folder, data_dir = faces
  items = _take(pipeline.make_train_iterator(_config(image_folder=str(folder), data_dir=str(data_dir))), 2)
  for item in items:
    assert item.shape == (2, 8, 32, 32, 3) and item.dtype == np.float32
    assert item.min() >= -1.0 and item.max() <= 1.0 and item.min() < -0.9 and item.max() > 0.9
    np.testing.assert_allclose((item + 1.0) * 127.5, np.rint((item + 1.0) * 127.5), atol=1e-4)  # uint8 levels.


def test_each_epoch_is_a_new_permutation_of_all_images(faces):
  folder, data_dir = faces
  iterator = pipeline.make_train_iterator(_config(image_folder=str(folder), data_dir=str(data_dir)))
  items_per_epoch = NUM_FACES // 16
  first_epoch = _rows(_take(iterator, items_per_epoch))
  second_epoch = _rows(_take(iterator, items_per_epoch))
  expected = sorted(_expected_faces(folder, images.Preprocessing(resolution=32)).values())
  assert sorted(first_epoch) == expected and sorted(second_epoch) == expected
  assert first_epoch != second_epoch


def test_held_out_images_are_the_last_sorted_ones_and_never_read(faces):
  folder, data_dir = faces
  iterator = pipeline.make_train_iterator(_config(image_folder=str(folder), data_dir=str(data_dir), held_out=16))
  faces_in_order = list(_expected_faces(folder, images.Preprocessing(resolution=32)).values())  # sorted names
  trained, held_out = faces_in_order[:NUM_FACES - 16], faces_in_order[NUM_FACES - 16:]
  epochs = [_rows(_take(iterator, (NUM_FACES - 16) // 16)) for _ in range(3)]
  for epoch in epochs:
    assert sorted(epoch) == sorted(trained)
  assert not set(held_out) & {row for epoch in epochs for row in epoch}
  with pytest.raises(images.ImageSourceError, match=f"held_out: {NUM_FACES} keeps out every one of the {NUM_FACES} images"):
    pipeline.make_train_iterator(_config(image_folder=str(folder), data_dir=str(data_dir), held_out=NUM_FACES))


def test_order_is_a_function_of_the_seed(faces):
  folder, data_dir = faces
  config = _config(image_folder=str(folder), data_dir=str(data_dir), random_flip=True)
  first = _take(pipeline.make_train_iterator(config), 8)
  again = _take(pipeline.make_train_iterator(config), 8)
  for item, same in zip(first, again):
    np.testing.assert_array_equal(item, same)
  config.seed = 1
  assert not np.array_equal(first[0], next(pipeline.make_train_iterator(config)))


def test_resuming_from_a_saved_state_gives_the_same_next_items(faces):
  folder, data_dir = faces
  config = _config(image_folder=str(folder), data_dir=str(data_dir), random_flip=True)
  iterator = pipeline.make_train_iterator(config)
  _take(iterator, 3)  # Mid-epoch: an epoch is 6 items.
  state = json.loads(json.dumps(iterator.get_state()))
  expected = _take(iterator, 5)  # Across the epoch boundary.
  resumed = pipeline.make_train_iterator(config)
  resumed.set_state(state)
  for item, same in zip(expected, _take(resumed, 5)):
    np.testing.assert_array_equal(item, same)


def test_random_flip_mirrors_about_half_of_the_same_images(faces):
  folder, data_dir = faces
  plain = _take(pipeline.make_train_iterator(_config(image_folder=str(folder), data_dir=str(data_dir))), 3)
  flipped = _take(pipeline.make_train_iterator(
      _config(image_folder=str(folder), data_dir=str(data_dir), random_flip=True)), 3)
  mirrored = 0
  for image, candidate in zip(np.concatenate(plain, axis=1)[0], np.concatenate(flipped, axis=1)[0]):
    if np.array_equal(candidate, image[:, ::-1]):
      mirrored += 1
    else:
      np.testing.assert_array_equal(candidate, image)
  assert 3 <= mirrored <= 21  # Of 24 images; Binomial(24, 1/2) is outside this range with probability 3e-4.


def test_greyscale_from_an_rgb_folder(faces):
  folder, data_dir = faces
  item = next(pipeline.make_train_iterator(
      _config(image_folder=str(folder), data_dir=str(data_dir), channels=1, resolution=16, n_critic=1)))
  assert item.shape == (1, 8, 16, 16, 1)


# Datasets named by TFDS, read from a local data_dir.


@pytest.fixture(scope="module")
def mnist_data_dir(shared_data, tmp_path_factory) -> tuple[pathlib.Path, np.ndarray]:
  """A data_dir holding 200 real MNIST digits as TFDS's `mnist` (its registered features and version)."""
  folder = shared_data / "mnist_t10k"
  digits = np.frombuffer(gzip.open(folder / "t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16)
  digits = digits.reshape(-1, 28, 28)[:200]
  labels = np.frombuffer(gzip.open(folder / "t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)[:200]
  data_dir = tmp_path_factory.mktemp("tfds")
  builder = tfds.builder("mnist", data_dir=data_dir)
  examples = ({"image": Image.fromarray(digit), "label": int(label)} for digit, label in zip(digits, labels))
  prepare.write_array_record_dataset(builder.data_dir, dataset_name="mnist", features=builder.info.features,
                                     examples=examples, examples_per_shard=64)
  return data_dir, digits


def _mnist_config(data_dir: pathlib.Path, **overrides) -> ml_collections.ConfigDict:
  return _config(**{"dataset": "mnist", "data_dir": str(data_dir), "channels": 1, "crop": 1.0, **overrides})


def test_a_tfds_dataset_is_read_by_name_and_preprocessed(mnist_data_dir):
  data_dir, digits = mnist_data_dir
  preprocessing = images.Preprocessing(resolution=32, crop=1.0, channels=1)
  expected = {images.preprocess_array(digit, preprocessing, name="digit").tobytes() for digit in digits}
  items = _take(pipeline.make_train_iterator(_mnist_config(data_dir)), 2)
  assert items[0].shape == (2, 8, 32, 32, 1) and items[0].dtype == np.float32
  assert set(_rows(items)) <= expected


@pytest.mark.parametrize("process_count", [2, 4])
def test_processes_read_their_slices_of_the_one_process_global_batches(mnist_data_dir, process_count):
  # Flips included, and across an epoch boundary (an item is 40 of the 200 digits): P processes' local batches side by
  # side are the 1-process batches, so a run may resume on another process count and see the same examples.
  data_dir, _ = mnist_data_dir
  config = _mnist_config(data_dir, resolution=28, batch_size=8, n_critic=5, random_flip=True)
  one = _take(pipeline.make_train_iterator(config, process_index=0, process_count=1), 7)
  parts = [_take(pipeline.make_train_iterator(config, process_index=index, process_count=process_count), 7)
           for index in range(process_count)]
  for step, item in enumerate(one):
    assert parts[0][step].shape == (5, 8 // process_count, 28, 28, 1)
    np.testing.assert_array_equal(np.concatenate([part[step] for part in parts], axis=1), item)
  # The position is the same on every process: any process's state resumes any other's at the same global batch.
  iterator = pipeline.make_train_iterator(config, process_index=1, process_count=process_count)
  _take(iterator, 4)
  resumed = pipeline.make_train_iterator(config, process_index=0, process_count=1)
  resumed.set_state(iterator.get_state())
  np.testing.assert_array_equal(next(resumed), one[4])


def test_flip_choices_are_fair_coins_of_the_seed_and_position():
  positions = np.arange(100_000)
  flips = pipeline.flip_choices(0, positions)
  assert abs(flips.mean() - 0.5) < 0.01 and abs(np.mean(flips[1:] == flips[:-1]) - 0.5) < 0.01
  np.testing.assert_array_equal(pipeline.flip_choices(0, positions[::-1]), flips[::-1])
  assert np.mean(pipeline.flip_choices(1, positions) == flips) < 0.51


@pytest.mark.parametrize("overrides, message", [
    (dict(dataset="no_such_dataset"), r"cannot read TFDS dataset 'no_such_dataset' .* array_record"),
    (dict(resolution=64), r"TFDS dataset mnist: image is too small \(28x28\): its 28x28 center crop"),
    (dict(batch_size=9), r"batch_size 9 is the global batch size: it must be divisible by the 2 processes"),
    (dict(n_critic=0), r"n_critic must be at least 1"),
])
def test_unusable_configurations_fail_at_start_with_a_clear_message(mnist_data_dir, overrides, message):
  data_dir, _ = mnist_data_dir
  with pytest.raises(ValueError, match=message):
    pipeline.make_train_iterator(_mnist_config(data_dir, **overrides), process_index=0, process_count=2)


# To the devices.


def _data_sharding() -> jax.sharding.NamedSharding:
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "data"))


def test_device_prefetcher_state_is_the_consumers_not_the_read_ahead(mnist_data_dir):
  data_dir, _ = mnist_data_dir
  config = _mnist_config(data_dir, batch_size=8 * len(jax.devices()))
  reference = _take(pipeline.make_train_iterator(config), 4)
  prefetcher = pipeline.prefetch_to_device(pipeline.make_train_iterator(config), _data_sharding(), size=2)
  for expected in reference[:2]:
    global_batch = next(prefetcher)
    assert isinstance(global_batch, jax.Array) and global_batch.sharding == _data_sharding()
    np.testing.assert_array_equal(np.asarray(global_batch), expected)
  state = json.loads(json.dumps(prefetcher.get_state()))
  assert state == {"next_index": 2}  # Although items 3 and 4 are already read and on their way.
  resumed = pipeline.prefetch_to_device(pipeline.make_train_iterator(config), _data_sharding(), size=2)
  resumed.set_state(state)
  np.testing.assert_array_equal(np.asarray(next(resumed)), reference[2])
  np.testing.assert_array_equal(np.asarray(next(resumed)), reference[3])


_TO_GLOBAL_ON_FOUR_DEVICES = """
import jax, numpy as np
from wgan_gp_jax.data import pipeline
mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "data"))
local_batch = np.arange(3 * 8 * 2 * 2 * 1, dtype=np.float32).reshape(3, 8, 2, 2, 1)
global_batch = pipeline.to_global(local_batch, sharding)
assert len(jax.devices()) == 4 and global_batch.shape == local_batch.shape
for shard in global_batch.addressable_shards:
  index = mesh.devices.tolist().index(shard.device)
  np.testing.assert_array_equal(np.asarray(shard.data), local_batch[:, 2 * index:2 * index + 2])
print("ok")
"""


def test_to_global_splits_the_batch_axis_over_the_data_devices():
  environment = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=os.environ["XLA_FLAGS"] + " --xla_force_host_platform_device_count=4")
  result = subprocess.run([sys.executable, "-c", _TO_GLOBAL_ON_FOUR_DEVICES], cwd=REPO_ROOT, env=environment,
                          capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
