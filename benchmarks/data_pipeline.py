r"""Measures how many examples per second `make_train_iterator` delivers (after a warm-up item).

  python -m benchmarks.data_pipeline --image_folder ../shared/data/celeba_10k/images --data_dir /tmp/tfds \
      --resolution 32 --batch_size 64 --n_critic 5 --items 100

The folder is prepared first if needed (not timed). Pass --dataset instead of --image_folder for a TFDS dataset.
"""

import time

import ml_collections
from absl import app, flags

from wgan_gp_jax.data import images, pipeline

_IMAGE_FOLDER = flags.DEFINE_string("image_folder", "", "Folder or .zip of images.")
_DATASET = flags.DEFINE_string("dataset", "celeb_a", "TFDS name, used when --image_folder is empty.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir.")
_RESOLUTION = flags.DEFINE_integer("resolution", 32, "Image side in pixels.")
_CHANNELS = flags.DEFINE_integer("channels", 3, "1 or 3.")
_CROP = flags.DEFINE_float("crop", images.DEFAULT_FACE_CROP, "Center crop as a fraction of the shorter side.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Global batch size.")
_N_CRITIC = flags.DEFINE_integer("n_critic", 5, "Critic steps per item.")
_RANDOM_FLIP = flags.DEFINE_bool("random_flip", True, "Random horizontal flips.")
_ITEMS = flags.DEFINE_integer("items", 100, "Items to time.")


def main(argv: list[str]) -> None:
  del argv
  config = ml_collections.ConfigDict(dict(
      dataset=_DATASET.value, image_folder=_IMAGE_FOLDER.value, data_dir=_DATA_DIR.value,
      resolution=_RESOLUTION.value, channels=_CHANNELS.value, crop=_CROP.value, random_flip=_RANDOM_FLIP.value,
      seed=0, batch_size=_BATCH_SIZE.value, n_critic=_N_CRITIC.value))
  iterator = pipeline.make_train_iterator(config)
  item = next(iterator)
  start = time.perf_counter()
  for _ in range(_ITEMS.value):
    item = next(iterator)
  seconds = time.perf_counter() - start
  examples = _ITEMS.value * item.shape[0] * item.shape[1]
  print(f"{examples / seconds:.0f} examples/s ({_ITEMS.value / seconds:.1f} items/s of shape {item.shape}),"
        f" {examples} examples in {seconds:.2f} s")


if __name__ == "__main__":
  app.run(main)
