"""Image input pipelines: TFDS datasets and prepared image folders, read with grain and without TensorFlow."""

from wgan_gp_jax.data.images import (DEFAULT_FACE_CROP, ImageFileError, ImageSourceError, Preprocessing,
                                     load_folder_images)
from wgan_gp_jax.data.pipeline import (DevicePrefetcher, LabelledImages, make_train_iterator, prefetch_to_device,
                                       to_global)
from wgan_gp_jax.data.prepare import PreparedDataset, prepare_idx_folder, prepare_image_folder

__all__ = [
    "DEFAULT_FACE_CROP",
    "DevicePrefetcher",
    "ImageFileError",
    "ImageSourceError",
    "LabelledImages",
    "PreparedDataset",
    "Preprocessing",
    "load_folder_images",
    "make_train_iterator",
    "prefetch_to_device",
    "prepare_idx_folder",
    "prepare_image_folder",
    "to_global",
]
