"""Preprocessing and reading of image files (wgan_gp_jax/data/images.py), on real CelebA and Olivetti images."""

import io
import pathlib
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from wgan_gp_jax.data import images


@pytest.fixture(scope="module")
def celeba_files(shared_data: pathlib.Path) -> list[pathlib.Path]:
  return [shared_data / "celeba_10k" / "images" / f"{index:06d}.jpg" for index in range(1, 41)]


def _png_bytes(image: Image.Image) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  return buffer.getvalue()


@pytest.mark.parametrize("width, height, crop, box", [
    (89, 109, images.DEFAULT_FACE_CROP, (4, 14, 84, 94)),  # Our half-size copy: the central 80x80.
    (178, 218, images.DEFAULT_FACE_CROP, (9, 29, 169, 189)),  # img_align_celeba: compare_gan's central 160x160.
    (89, 109, 1.0, (0, 10, 89, 99)),  # The largest central square, img[10:99].
    (28, 28, 1.0, (0, 0, 28, 28)),
    (3, 1, 0.5, (1, 0, 2, 1)),  # Never an empty crop.
])
def test_center_crop_box(width, height, crop, box):
  assert images.center_crop_box(width, height, crop=crop) == box


def test_crop_and_native_size_resize_give_the_exact_pixels_of_the_crop(celeba_files):
  raw = np.asarray(Image.open(celeba_files[0]))
  assert raw.shape == (109, 89, 3)
  default = images.preprocess_image(Image.open(celeba_files[0]), images.Preprocessing(resolution=80), name="f")
  np.testing.assert_array_equal(default, raw[14:94, 4:84])
  square = images.preprocess_image(Image.open(celeba_files[0]), images.Preprocessing(resolution=89, crop=1.0),
                                   name="f")
  np.testing.assert_array_equal(square, raw[10:99])


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_preprocess_shapes_and_greyscale_is_the_luma_of_rgb(celeba_files, resolution):
  image = images.decode_image(celeba_files[1].read_bytes(), name="f")
  rgb = images.preprocess_image(image, images.Preprocessing(resolution=resolution), name="f")
  grey = images.preprocess_image(image, images.Preprocessing(resolution=resolution, channels=1), name="f")
  assert rgb.shape == (resolution, resolution, 3) and rgb.dtype == np.uint8
  assert grey.shape == (resolution, resolution, 1) and grey.dtype == np.uint8
  assert rgb.std() > 20  # A face, not a flat or black image.
  luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
  # Greyscale conversion before the resize vs after it differs only by rounding and by where bicubic overshoot
  # was clipped (per colour channel, or on the grey value).
  difference = np.abs(luma - grey[..., 0])
  assert difference.mean() < 0.5 and difference.max() < 6.0


def test_greyscale_sources_become_one_or_three_channels(shared_data):
  faces = np.load(shared_data / "olivetti_faces" / "olivetti_faces_uint8.npy")
  face = faces[0]
  one = images.preprocess_array(face, images.Preprocessing(resolution=64, crop=1.0, channels=1), name="olivetti 0")
  np.testing.assert_array_equal(one[..., 0], face)  # Already square at the resolution: unchanged.
  three = images.preprocess_array(face[..., None], images.Preprocessing(resolution=32, crop=1.0), name="olivetti 0")
  assert three.shape == (32, 32, 3)
  np.testing.assert_array_equal(three[..., 0], three[..., 2])


def test_exif_orientation_is_applied(celeba_files):
  upright = Image.open(celeba_files[2]).convert("RGB")
  stored_sideways = upright.transpose(Image.Transpose.ROTATE_90)  # As a camera held sideways stores it.
  exif = Image.Exif()
  exif[0x0112] = 6  # Orientation: "rotate 90 CW to display", undoing ROTATE_90 (which is counter-clockwise).
  buffer = io.BytesIO()
  stored_sideways.save(buffer, format="PNG", exif=exif)
  preprocessing = images.Preprocessing(resolution=64)
  decoded = images.preprocess_image(images.decode_image(buffer.getvalue(), name="f"), preprocessing, name="f")
  np.testing.assert_array_equal(decoded, images.preprocess_image(upright, preprocessing, name="f"))


def test_bad_files_raise_errors_that_name_the_file(celeba_files):
  jpeg = celeba_files[3].read_bytes()
  with pytest.raises(images.CorruptImageError, match=r"^faces/cut\.jpg: corrupt or truncated JPEG"):
    images.decode_image(jpeg[: len(jpeg) // 2], name="faces/cut.jpg")
  with pytest.raises(images.NotAnImageError, match=r"^notes\.txt: not an image"):
    images.decode_image(b"name,age\nada,36\n", name="notes.txt")
  with pytest.raises(images.NotAnImageError, match=r"^empty\.jpg: empty file"):
    images.decode_image(b"", name="empty.jpg")
  with pytest.raises(images.CorruptImageError, match=r"^header\.png"):
    images.decode_image(_png_bytes(Image.new("RGB", (40, 40)))[:60], name="header.png")
  thumbnail = Image.new("RGB", (30, 40))
  with pytest.raises(images.ImageTooSmallError, match=r"^thumb\.png: image is too small \(30x40\): its 27x27 center"):
    images.preprocess_image(thumbnail, images.Preprocessing(resolution=64), name="thumb.png")
  assert images.preprocess_image(thumbnail, images.Preprocessing(resolution=54), name="t").shape == (54, 54, 3)
  sixteen_bit = images.decode_image(_png_bytes(Image.fromarray(np.full((64, 64), 40000, np.uint16))), name="d.png")
  with pytest.raises(images.UnsupportedImageError, match=r"^d\.png: pixel mode 'I;16'"):
    images.preprocess_image(sixteen_bit, images.Preprocessing(resolution=32), name="d.png")


@pytest.mark.parametrize("options, message", [
    (dict(resolution=0), "resolution must be positive"),
    (dict(resolution=32, crop=0.0), r"must be in \(0, 1\]"),
    (dict(resolution=32, crop=1.5), r"must be in \(0, 1\]"),
    (dict(resolution=32, channels=2), "channels must be 1"),
])
def test_invalid_preprocessing_is_refused(options, message):
  with pytest.raises(ValueError, match=message):
    images.Preprocessing(**options)


@pytest.fixture
def face_folder(tmp_path, celeba_files) -> pathlib.Path:
  """32 real faces (two in a subfolder) plus a truncated JPEG, a text file, a thumbnail and a hidden file."""
  folder = tmp_path / "faces"
  (folder / "more").mkdir(parents=True)
  for file in celeba_files[:30]:
    shutil.copy(file, folder / file.name)
  for file in celeba_files[30:32]:
    shutil.copy(file, folder / "more" / file.name)
  (folder / "000000_truncated.jpg").write_bytes(celeba_files[32].read_bytes()[:1500])
  (folder / "README.txt").write_text("my faces")
  Image.new("RGB", (12, 12)).save(folder / "thumb.png")
  (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
  return folder


def test_load_folder_images_skips_bad_files_in_sorted_order(face_folder, celeba_files):
  loaded = images.load_folder_images(face_folder, resolution=32)
  assert loaded.shape == (32, 32, 32, 3) and loaded.dtype == np.uint8
  # Sorted relative names: 000001.jpg ... 000030.jpg, then more/000031.jpg, more/000032.jpg.
  for index in (0, 29, 31):
    expected = images.preprocess_image(Image.open(celeba_files[index]), images.Preprocessing(resolution=32), name="f")
    np.testing.assert_array_equal(loaded[index], expected)
  limited = images.load_folder_images(face_folder, resolution=32, limit=5)
  np.testing.assert_array_equal(limited, loaded[:5])
  grey = images.load_folder_images(face_folder, resolution=16, crop=1.0, channels=1, limit=2)
  assert grey.shape == (2, 16, 16, 1)


def test_a_zip_reads_like_the_folder_and_ignores_macos_metadata(face_folder, tmp_path):
  archive = tmp_path / "faces.zip"
  with zipfile.ZipFile(archive, "w") as zip_file:
    for file in sorted(face_folder.rglob("*")):
      if file.is_file():
        zip_file.write(file, f"img_align_celeba/{file.relative_to(face_folder).as_posix()}")
    zip_file.writestr("__MACOSX/img_align_celeba/._000001.jpg", b"\0\5\26\7 AppleDouble")
  with images.ImageSource.open(archive) as source:
    assert len(source.names) == 35  # 32 faces, truncated, README, thumbnail: no .DS_Store, no __MACOSX.
    assert source.names[0] == "img_align_celeba/000000_truncated.jpg"
  np.testing.assert_array_equal(images.load_folder_images(archive, resolution=32),
                                images.load_folder_images(face_folder, resolution=32))


def test_sources_without_usable_images_are_clear_errors(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ValueError, match=r"no usable image in .*empty \(0 files\)"):
    images.load_folder_images(empty, resolution=32)
  (empty / "a.txt").write_text("no image")
  with pytest.raises(ValueError, match=r"\(1 files, all unusable, first: .*a\.txt: not an image"):
    images.load_folder_images(empty, resolution=32)
  with pytest.raises(FileNotFoundError, match="image folder or zip not found"):
    images.ImageSource.open(tmp_path / "missing")
  with pytest.raises(ValueError, match="neither"):
    images.ImageSource.open(empty / "a.txt")
