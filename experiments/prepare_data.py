r"""Converts a folder or zip of images once into an array_record TFDS dataset for training (no TensorFlow needed).

  python -m experiments.prepare_data --image_folder ~/faces --out ~/tensorflow_datasets --resolution 64

Then train with `--config.data.image_folder ~/faces --config.data.data_dir ~/tensorflow_datasets` and the same resolution, crop
and channels: training finds this dataset instead of preparing it again. Unusable files (not images, corrupt or
truncated, too small for the crop) are skipped; the report printed here lists them and is also saved as
`preparation_report.json` in the dataset directory.
"""

import json

from absl import flags

from experiments import cli
from wgan_gp_jax.data import images, prepare

_IMAGE_FOLDER = flags.DEFINE_string("image_folder", None, "Folder (searched recursively) or .zip of images.",
                                    required=True)
_OUT = flags.DEFINE_string("out", None, "TFDS data dir to write the dataset under (default: $TFDS_DATA_DIR, else"
                           " ~/tensorflow_datasets); pass the same as --config.data.data_dir when training.")
_RESOLUTION = flags.DEFINE_integer("resolution", 64, "Side of the square images to store, in pixels.")
_CROP = flags.DEFINE_float("crop", images.DEFAULT_FACE_CROP, "Side of the center square crop as a fraction of the"
                           " shorter image side (default 160/178: the CelebA crop of Lucic et al. 2018; 1.0 for the"
                           " largest square).")
_CHANNELS = flags.DEFINE_enum("channels", "3", ["1", "3"], "3 for RGB, 1 for greyscale.")


def main(argv: list[str]) -> None:
  del argv
  prepared = prepare.prepare_image_folder(_IMAGE_FOLDER.value, resolution=_RESOLUTION.value, crop=_CROP.value,
                                          channels=int(_CHANNELS.value), data_dir=_OUT.value)
  if not prepared.newly_prepared:  # A new preparation has logged its report already.
    print(f"Already prepared:\n{prepare.format_report(prepared.report, directory=prepared.directory)}")
  print(json.dumps({"dataset_dir": str(prepared.directory), "images": prepared.num_examples,
                    "skipped": prepared.report["skipped"]}))


if __name__ == "__main__":
  cli.run(main)
