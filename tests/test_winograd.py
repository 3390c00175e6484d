"""Winograd convolutions: exact algebra in float64, float32 error bounds, the Inception layers that use them, and the
three training faces on the space-to-depth grid."""

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import pytest

from wgan_gp_jax.kernels import conv, winograd
from wgan_gp_jax.metrics import inception


def _direct(x, kernel, padding):
  return lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                  precision=lax.Precision.HIGHEST)


@pytest.mark.parametrize("tile,kernel", [(1, 3), (2, 3), (4, 3), (6, 3), (4, 5), (2, 7), (4, 7), (3, 1)])
def test_matrices_compute_a_1d_correlation_exactly(tile, kernel):
  a_t, g, b_t = winograd.winograd_matrices(tile, kernel)
  rng = np.random.default_rng(tile * 10 + kernel)
  d = rng.standard_normal(tile + kernel - 1)
  w = rng.standard_normal(kernel)
  expected = [w @ d[i:i + kernel] for i in range(tile)]
  np.testing.assert_allclose(a_t @ ((g @ w) * (b_t @ d)), expected, rtol=1e-12, atol=1e-12)


def test_f23_matrices_are_lavin_and_grays_up_to_the_sign_of_a_point():
  a_t, g, b_t = winograd.winograd_matrices(2, 3)
  # Lavin and Gray (2016), eq. 7, with the first row of G and B^T negated together.
  np.testing.assert_array_equal(a_t, [[1, 1, 1, 0], [0, 1, -1, 1]])
  np.testing.assert_array_equal(g, [[-1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
  np.testing.assert_array_equal(b_t, [[-1, 0, 1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, -1, 0, 1]])


_CASES = [  # (input H, W), channels in/out, kernel, padding, tiles
  ((35, 35), (64, 96), (3, 3), ((1, 1), (1, 1)), None),
  ((17, 17), (32, 24), (1, 7), ((0, 0), (3, 3)), None),
  ((17, 17), (32, 24), (7, 1), ((3, 3), (0, 0)), None),
  ((35, 35), (16, 8), (5, 5), ((2, 2), (2, 2)), None),
  ((8, 8), (40, 32), (3, 3), ((1, 1), (1, 1)), (6, 6)),
  ((9, 5), (3, 2), (3, 1), ((2, 0), (1, 0)), (3, 1)),  # asymmetric padding, ragged last tile
  ((3, 4), (2, 2), (3, 3), ((0, 0), (0, 0)), (4, 4)),  # one output row, tile larger than the output
  ((23, 19), (5, 7), (3, 3), ((0, 0), (0, 0)), None),
]


@pytest.mark.parametrize("size,channels,kernel,padding,tiles", _CASES)
def test_conv2d_equals_direct_convolution_in_float64(size, channels, kernel, padding, tiles):
  rng = np.random.default_rng(sum(size) + sum(channels))
  x = rng.standard_normal((2, *size, channels[0]))
  w = rng.standard_normal((*kernel, *channels))
  with jax.enable_x64(True):
    expected = _direct(x, w, padding)
    got = jax.jit(winograd.conv2d, static_argnums=(2, 3))(x, w, padding, tiles)
    assert got.dtype == jnp.float64 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())


@pytest.mark.parametrize("size,channels,kernel,padding,tiles", _CASES[:4])
def test_conv2d_float32_error_is_a_few_ulps_of_the_largest_output(size, channels, kernel, padding, tiles):
  # ReLU-like inputs and fan-in scaled kernels, as in the Inception network.
  rng = np.random.default_rng(0)
  x = np.maximum(rng.standard_normal((2, *size, channels[0])), 0)
  w = rng.standard_normal((*kernel, *channels)) / np.sqrt(kernel[0] * kernel[1] * channels[0])
  with jax.enable_x64(True):
    exact = np.asarray(_direct(x, w, padding))
  got = jax.jit(winograd.conv2d, static_argnums=(2, 3))(x.astype(np.float32), w.astype(np.float32), padding, tiles)
  assert got.dtype == jnp.float32
  assert np.abs(np.asarray(got, np.float64) - exact).max() < 5e-5 * np.abs(exact).max()


def test_conv2d_rejects_bad_input():
  x = jnp.zeros((1, 4, 4, 3))
  with pytest.raises(ValueError, match="matching channels"):
    winograd.conv2d(x, jnp.zeros((3, 3, 2, 1)), ((1, 1), (1, 1)))
  with pytest.raises(ValueError, match="non-negative"):
    winograd.conv2d(x, jnp.zeros((3, 3, 3, 1)), ((-1, 1), (1, 1)))
  with pytest.raises(ValueError, match="larger than the padded input"):
    winograd.conv2d(x, jnp.zeros((7, 1, 3, 1)), ((1, 1), (0, 0)))
  with pytest.raises(ValueError, match="interpolation points"):
    winograd.winograd_matrices(16, 7)


def _inception_convolutions(monkeypatch) -> set[tuple[int, tuple[int, int], tuple[int, int]]]:
  """(stride, kernel, padding) of every convolution InceptionV3 sends to the CPU layers, found by tracing it."""
  used = set()
  cpu_conv = inception._cpu_conv

  def recording(x, kernel, stride, padding):
    used.add((stride, tuple(kernel.shape[:2]), tuple(padding)))
    return cpu_conv(x, kernel, stride, padding)

  monkeypatch.setattr(inception, "_cpu_conv", recording)
  network = inception.InceptionV3(kernels="cpu")
  variables = jax.eval_shape(network.init, jax.random.key(0), jnp.zeros((1, 75, 75, 3)))
  jax.eval_shape(network.apply, variables, jnp.zeros((2, 75, 75, 3)))
  monkeypatch.setattr(inception, "_cpu_conv", cpu_conv)
  return used


def test_every_inception_convolution_on_the_cpu_path_equals_the_native_one(monkeypatch):
  # Each distinct convolution of the network once, on odd-sized ReLU-like inputs with fan-in scaled kernels: as exact
  # as the whole network compared with its native twin, for a fraction of the compile time.
  used = _inception_convolutions(monkeypatch)
  assert len(used) >= 6 and (1, (1, 7), (0, 3)) in used and (2, (3, 3), (0, 0)) in used
  rng = np.random.default_rng(0)
  for stride, kernel, padding in sorted(used):
    x = np.maximum(rng.standard_normal((2, 17, 17, 24)), 0).astype(np.float32)
    w = (rng.standard_normal((*kernel, 24, 20)) / np.sqrt(kernel[0] * kernel[1] * 24)).astype(np.float32)
    cpu = jax.jit(inception._cpu_conv, static_argnums=(2, 3))(x, w, stride, padding)
    native = jax.jit(inception._native_conv, static_argnums=(2, 3))(x, w, stride, padding)
    np.testing.assert_allclose(cpu, native, rtol=0, atol=2e-5 * np.abs(native).max(),
                               err_msg=f"stride {stride}, kernel {kernel}, padding {padding}")


# The training faces: (input H, W), kernel, stride, padding. Every kernel here has ceil(k / s) == 3 taps per stride.
_TRAINING_CASES = [
    ((16, 16), 5, 2, "SAME"),  # the DCGAN layers
    ((9, 7), 5, 2, "SAME"),  # odd sizes: the last tile overhangs the output
    ((10, 11), 3, 1, "SAME"),  # the ResNet layers
    ((9, 9), 5, 2, "VALID"),
    ((8, 8), 3, 1, ((2, 0), (1, 3))),  # asymmetric padding
    ((13, 10), 6, 2, "SAME"),  # an even kernel
]


def _training_faces_and_references(size, kernel, stride, padding, dtype):
  rng = np.random.default_rng(sum(size) + kernel)
  geometry = conv.conv_geometry(size, (kernel, kernel), (stride, stride), padding)
  x = rng.standard_normal((2, *size, 5)).astype(dtype)
  w = (rng.standard_normal((kernel, kernel, 5, 4)) / np.sqrt(kernel * kernel * 5)).astype(dtype)
  y = rng.standard_normal((2, geometry.height.low_size, geometry.width.low_size, 4)).astype(dtype)
  pairs = [(winograd.correlate, conv._correlate_native, (x, w)), (winograd.scatter, conv._scatter_native, (y, w)),
           (winograd.weight, conv._weight_native, (x, y))]
  return [(jax.jit(mine, static_argnums=2)(*args, geometry), jax.jit(reference, static_argnums=2)(*args, geometry))
          for mine, reference, args in pairs]


@pytest.mark.parametrize("size,kernel,stride,padding", _TRAINING_CASES)
def test_training_faces_equal_the_convolution_and_its_transposes_in_float64(size, kernel, stride, padding):
  assert winograd.fits(conv.conv_geometry(size, (kernel, kernel), (stride, stride), padding))
  with jax.enable_x64(True):
    for got, expected in _training_faces_and_references(size, kernel, stride, padding, np.float64):
      assert got.dtype == jnp.float64 and got.shape == expected.shape
      np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())


def test_training_faces_float32_error_is_a_few_ulps_of_the_largest_entry():
  for got, expected in _training_faces_and_references((16, 16), 5, 2, "SAME", np.float32):
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * np.abs(expected).max())


def test_training_faces_refuse_kernels_of_other_tap_counts():
  geometry = conv.conv_geometry((8, 8), (4, 4), (2, 2), "SAME")  # ceil(4 / 2) = 2 taps per stride
  assert not winograd.fits(geometry)
  with pytest.raises(ValueError, match="ceil\\(kernel / stride\\) == 3"):
    winograd.correlate(jnp.zeros((1, 8, 8, 2)), jnp.zeros((4, 4, 2, 3)), geometry)
