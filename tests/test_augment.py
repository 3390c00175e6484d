import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wgan_gp_jax import augment
from wgan_gp_jax.augment import POLICIES, diff_augment, parse_policy

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL = "color,translation,cutout"
# Most tests share these shapes and one compiled program per (shape, policy, ratios): compiling dominates their time.
SHAPE = (64, 16, 16, 3)
ODD = (64, 15, 9, 1)  # Non-square, one channel, odd cutout width (int(9 / 2 + 0.5) == 5).
_augment = jax.jit(diff_augment, static_argnames=("policy", "translation_ratio", "cutout_ratio"))


def _images(seed, shape=SHAPE, dtype=jnp.float32):
  """Uniform on [-1, 1], drawn by numpy (every new shape of an eager jax.random call costs a compilation)."""
  return jnp.asarray(np.random.default_rng(seed).uniform(-1.0, 1.0, shape).astype(dtype))


def _translation_reference(x, rows, cols):
  """The authors' rand_translation in numpy: out[n, i, j] = x[n, i + rows[n], j + cols[n]], else 0."""
  x = np.asarray(x)
  n, h, w, _ = x.shape
  out = np.zeros_like(x)
  for k in range(n):
    for i in range(max(0, -rows[k]), min(h, h - rows[k])):
      for j in range(max(0, -cols[k]), min(w, w - cols[k])):
        out[k, i, j] = x[k, i + rows[k], j + cols[k]]
  return out


def _cutout_reference(key, shape, ratio):
  """The authors' rand_cutout mask in numpy (a scatter at clamped indices), from the drawn centres."""
  n, h, w, _ = shape
  side_h, side_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
  centre_h, centre_w = map(np.asarray, augment._cutout_centres(key, shape, ratio))
  mask = np.ones((n, h, w, 1), np.float32)
  for k in range(n):
    grid_h = np.clip(np.arange(side_h) + centre_h[k] - side_h // 2, 0, h - 1)  # Clamped into the image.
    grid_w = np.clip(np.arange(side_w) + centre_w[k] - side_w // 2, 0, w - 1)
    mask[k][np.ix_(grid_h, grid_w)] = 0
  return mask


def test_random_parameters_cover_their_ranges_uniformly():
  key, n = jax.random.key(14), 20000
  draws = {
      "brightness": (augment._color_factors(key, n)[0], -0.5, 0.5),
      "saturation": (augment._color_factors(key, n)[1], 0.0, 2.0),
      "contrast": (augment._color_factors(key, n)[2], 0.5, 1.5),
  }
  for name, (values, low, high) in draws.items():
    values = np.asarray(values)
    assert values.dtype == np.float32 and values.min() >= low and values.max() < high, name
    np.testing.assert_allclose(np.histogram(values, 10, (low, high))[0] / n, 0.1, atol=0.01, err_msg=name)
  rows, cols = map(np.asarray, augment._translation_offsets(key, (n, 32, 20, 3), 0.125))  # s = 4 and 3.
  centre_rows, centre_cols = map(np.asarray, augment._cutout_centres(key, (n, 32, 10, 3), 0.5))  # Sides 16, 5.
  for values, low, high in [(rows, -4, 4), (cols, -3, 3), (centre_rows, 0, 32), (centre_cols, 0, 9)]:
    np.testing.assert_allclose(np.bincount(values - low) / n, 1 / (high - low + 1), atol=0.01)
    assert len(np.bincount(values - low)) == high - low + 1
  assert abs(np.corrcoef(rows, cols)[0, 1]) < 0.03 and abs(np.corrcoef(centre_rows, centre_cols)[0, 1]) < 0.03


def test_same_key_is_bit_identical_and_different_keys_differ():
  x = _images(0)
  first = _augment(x, jax.random.key(1), policy=FULL)
  np.testing.assert_array_equal(first, _augment(x, jax.random.key(1), policy=FULL))
  assert not np.array_equal(first, _augment(x, jax.random.key(2), policy=FULL))


def test_jit_matches_eager():
  x, key = _images(0), jax.random.key(3)
  np.testing.assert_allclose(_augment(x, key, policy=FULL), diff_augment(x, key, policy=FULL), rtol=1e-6, atol=1e-6)


def test_shape_and_dtype_are_preserved():
  for shape in [(4, 32, 32, 1), (4, 32, 32, 3), (3, 12, 7, 3), (2, 2, 2, 1)]:
    for dtype in (jnp.float32, jnp.bfloat16):
      for policy in ("color", "translation", "cutout", FULL):
        out = jax.eval_shape(functools.partial(diff_augment, policy=policy), jax.ShapeDtypeStruct(shape, dtype),
                             jax.random.key(1))
        assert out.shape == shape and out.dtype == dtype, (shape, dtype, policy)
  # And run the smallest and an odd one, in one program.
  run = jax.jit(lambda xs, key: [diff_augment(x, key, policy=FULL) for x in xs])
  for out in run([_images(0, (2, 2, 2, 1)), _images(1, (3, 12, 7, 3), jnp.bfloat16)], jax.random.key(1)):
    assert np.all(np.isfinite(np.asarray(out, np.float32)))


def test_empty_policy_returns_x_itself():
  x = _images(0)
  assert diff_augment(x, jax.random.key(1), policy="") is x
  assert diff_augment(x, jax.random.key(1), policy=()) is x


@pytest.mark.parametrize("shape", [SHAPE, ODD])
def test_translation_copies_shifted_pixels_and_fills_zeros(shape):
  key = jax.random.key(4)
  x = _images(0, shape)
  out = np.asarray(_augment(x, key, policy="translation"))
  rows, cols = map(np.asarray, augment._translation_offsets(key, shape, 0.125))
  np.testing.assert_array_equal(out, _translation_reference(x, rows, cols))
  # Offsets are uniform integers on [-s, s], s = int(size / 8 + 0.5), for rows and columns independently.
  shift_h, shift_w = int(shape[1] * 0.125 + 0.5), int(shape[2] * 0.125 + 0.5)
  assert set(rows) == set(range(-shift_h, shift_h + 1)) and set(cols) == set(range(-shift_w, shift_w + 1))
  assert not np.array_equal(rows, cols)
  # Only copies and zeros: values stay within [min(x, 0), max(x, 0)].
  assert out.min() >= min(float(x.min()), 0.0) and out.max() <= max(float(x.max()), 0.0)


def test_translation_of_ones_zeroes_exactly_the_rows_and_columns_shifted_out():
  n, h, w, _ = ODD
  key = jax.random.key(5)
  out = np.asarray(_augment(jnp.ones(ODD), key, policy="translation"))[..., 0]
  rows, cols = map(np.asarray, augment._translation_offsets(key, ODD, 0.125))
  assert set(np.unique(out)) == {0.0, 1.0}
  for k in range(n):
    kept_rows = (np.arange(h) + rows[k] >= 0) & (np.arange(h) + rows[k] < h)
    kept_cols = (np.arange(w) + cols[k] >= 0) & (np.arange(w) + cols[k] < w)
    np.testing.assert_array_equal(out[k], np.outer(kept_rows, kept_cols))  # Each row and column: all kept or all 0.
    assert (out[k] == 0).sum() == h * w - (h - abs(rows[k])) * (w - abs(cols[k]))


def test_translation_with_zero_shift_is_the_identity():
  x = _images(0)
  assert int(SHAPE[1] * 0.01 + 0.5) == 0
  np.testing.assert_array_equal(_augment(x, jax.random.key(1), policy="translation", translation_ratio=0.01), x)


@pytest.mark.parametrize("shape", [SHAPE, ODD])
def test_cutout_zeroes_one_clipped_rectangle_as_the_authors_code(shape):
  n, h, w, c = shape
  key = jax.random.key(6)
  out = np.asarray(_augment(jnp.ones(shape), key, policy="cutout"))
  np.testing.assert_array_equal(out, np.broadcast_to(_cutout_reference(key, shape, 0.5), shape))
  side_h, side_w = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
  areas = []
  for k in range(n):
    zero = out[k, :, :, 0] == 0
    area = zero.sum()
    assert area == zero.any(axis=1).sum() * zero.any(axis=0).sum() and 0 < area <= side_h * side_w  # A rectangle.
    areas.append(area)
  assert max(areas) == side_h * side_w and min(areas) < side_h * side_w  # Whole squares and clipped ones.


def test_cutout_keeps_values_within_the_input_range_and_its_gradient_is_the_mask():
  x = _images(0)
  key = jax.random.key(7)
  out = _augment(x, key, policy="cutout")
  assert float(out.min()) >= min(float(x.min()), 0.0) and float(out.max()) <= max(float(x.max()), 0.0)
  gradient = jax.jit(jax.grad(lambda x: jnp.sum(diff_augment(x, key, policy="cutout"))))(x)
  mask = _augment(jnp.ones_like(x), key, policy="cutout")
  np.testing.assert_array_equal(gradient, mask)
  np.testing.assert_array_equal(out, x * mask)


def test_color_shifts_a_grey_image_by_one_brightness_per_example():
  # A constant grey image: saturation and contrast have nothing to scale, only brightness moves it.
  key = jax.random.key(8)
  out = np.asarray(_augment(jnp.full(SHAPE, 0.25), key, policy="color"))
  brightness = np.asarray(augment._color_factors(key, SHAPE[0])[0])[:, None, None, None]
  np.testing.assert_allclose(out, 0.25 + np.broadcast_to(brightness, out.shape), atol=1e-6)
  assert brightness.min() >= -0.5 and brightness.max() < 0.5 and np.ptp(brightness) > 0.8


def test_color_of_a_constant_colour_scales_its_chroma_by_saturation_times_contrast():
  # Every pixel (r, g, b) = v: out_c = mean(v) + brightness + saturation * contrast * (v_c - mean(v)).
  v = jnp.array([0.8, -0.2, 0.1])
  out = np.asarray(_augment(jnp.broadcast_to(v, SHAPE), jax.random.key(9), policy="color"))
  np.testing.assert_allclose(out, np.broadcast_to(out[:, :1, :1], out.shape), atol=1e-6)  # Still constant.
  pixel = out[:, 0, 0]
  brightness = pixel.mean(axis=1) - float(v.mean())
  assert brightness.min() >= -0.5 - 1e-6 and brightness.max() < 0.5 + 1e-6
  factor = (pixel - pixel.mean(axis=1, keepdims=True)) / np.asarray(v - v.mean())
  np.testing.assert_allclose(factor, np.broadcast_to(factor[:, :1], factor.shape), rtol=1e-4, atol=1e-5)
  assert factor.min() >= 0.0 and factor.max() < 3.0 and factor.max() > 2.0  # s * t, s ~ U[0, 2), t ~ U[0.5, 1.5).


def test_color_of_one_channel_is_affine_with_slope_the_contrast():
  # Saturation is the identity for one channel: out = mean(x) + brightness + contrast * (x - mean(x)).
  x = _images(0, ODD)
  out = np.asarray(_augment(x, jax.random.key(10), policy="color"), np.float64)
  x = np.asarray(x, np.float64)
  centred_x = x - x.mean(axis=(1, 2, 3), keepdims=True)
  centred_out = out - out.mean(axis=(1, 2, 3), keepdims=True)
  slope = (centred_out * centred_x).sum(axis=(1, 2, 3)) / (centred_x**2).sum(axis=(1, 2, 3))
  np.testing.assert_allclose(centred_out, slope[:, None, None, None] * centred_x, atol=1e-5)
  assert slope.min() >= 0.5 - 1e-5 and slope.max() < 1.5 + 1e-5
  shift = out.mean(axis=(1, 2, 3)) - x.mean(axis=(1, 2, 3))
  assert shift.min() >= -0.5 - 1e-5 and shift.max() < 0.5 + 1e-5


@pytest.mark.parametrize("channels,bound", [(3, 4.5), (1, 2.5)])
def test_color_stays_within_the_documented_bound(channels, bound):
  # The extreme input: one channel of one pixel at 1, everything else at -1 (and its negation).
  extreme = -np.ones((1024, 8, 8, channels), np.float32)
  extreme[:, 0, 0, 0] = 1.0
  extreme[512:] *= -1
  uniform = np.random.default_rng(0).uniform(-1.0, 1.0, extreme.shape).astype(np.float32)
  out = np.abs(np.asarray(_augment(jnp.asarray(np.concatenate([extreme, uniform])), jax.random.key(11),
                                   policy="color")))
  assert out.max() < bound
  assert out[:1024].max() > bound - 0.75  # The bound is nearly reached.


def test_gradients_flow_to_the_generator_through_the_full_policy():
  rng = np.random.default_rng(0)
  z = jnp.asarray(rng.normal(size=(8, 5)), jnp.float32)
  theta = jnp.asarray(0.1 * rng.normal(size=(5, 16 * 16 * 3)), jnp.float32)
  generator = lambda theta: jnp.tanh(z @ theta).reshape(8, 16, 16, 3)
  loss = lambda theta: jnp.sum(diff_augment(generator(theta), jax.random.key(2), policy=FULL)**2)
  gradient = jax.jit(jax.grad(loss))(theta)
  assert np.all(np.isfinite(gradient)) and np.abs(gradient).sum() > 0


def test_forward_mode_differentiation_works():
  x, tangent = _images(0), _images(1)
  key = jax.random.key(2)
  value, derivative = jax.jit(lambda x, t: jax.jvp(lambda x: diff_augment(x, key, policy=FULL), (x,), (t,)))(x, tangent)
  np.testing.assert_allclose(value, _augment(x, key, policy=FULL), rtol=1e-6, atol=1e-6)
  # Every op is affine in x, so the derivative along t is the difference of outputs.
  np.testing.assert_allclose(derivative, _augment(x + tangent, key, policy=FULL) - value, atol=1e-5)


@pytest.mark.parametrize("order", [("color", "translation", "cutout"), ("cutout", "translation")])
def test_each_op_draws_the_same_numbers_whatever_else_the_policy_holds(order):
  x, key = _images(0), jax.random.key(12)
  composed = x
  for name in order:
    composed = _augment(composed, key, policy=name)
  np.testing.assert_allclose(_augment(x, key, policy=",".join(order)), composed, rtol=1e-6, atol=1e-6)


def test_parse_policy():
  assert parse_policy("") == () and parse_policy(()) == ()
  assert parse_policy("color,translation,cutout") == POLICIES
  assert parse_policy(" cutout , color,") == ("cutout", "color")
  assert parse_policy(["translation"]) == ("translation",)
  with pytest.raises(ValueError, match="'flip'.*color, translation, cutout"):
    parse_policy("color,flip")
  with pytest.raises(ValueError, match="'Color'"):
    parse_policy(["Color"])
  with pytest.raises(ValueError, match="color more than once"):
    parse_policy("color,cutout,color")


def test_bad_inputs_raise_value_error():
  x = _images(0)
  key = jax.random.key(1)
  with pytest.raises(ValueError, match="'zoom'"):
    diff_augment(x, key, policy="zoom")
  with pytest.raises(ValueError, match="translation_ratio"):
    diff_augment(x, key, policy="translation", translation_ratio=-0.1)
  with pytest.raises(ValueError, match="cutout_ratio"):
    diff_augment(x, key, policy="cutout", cutout_ratio=1.5)
  with pytest.raises(ValueError, match="floating"):
    diff_augment(jnp.ones((2, 4, 4, 3), jnp.int32), key, policy=FULL)
  with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
    diff_augment(jnp.ones((4, 4, 3)), key, policy=FULL)


def test_a_ratio_of_one_shifts_or_cuts_by_a_whole_side_and_past_one_is_refused():
  x = _images(0, shape=(64, 8, 8, 1))
  key = jax.random.key(2)
  shifted = np.asarray(_augment(x, key, policy="translation", translation_ratio=1.0))
  rows, cols = map(np.asarray, augment._translation_offsets(key, x.shape, 1.0))
  assert rows.min() == -8 and rows.max() == 8  # shifts by up to the whole side: such an image is all zeros
  np.testing.assert_array_equal(shifted, _translation_reference(x, rows, cols))
  assert np.all(shifted[np.abs(rows) == 8] == 0)
  cut = np.asarray(_augment(x, key, policy="cutout", cutout_ratio=1.0))
  centre_rows, centre_cols = map(np.asarray, augment._cutout_centres(key, x.shape, 1.0))
  centred = (centre_rows == 4) & (centre_cols == 4)
  assert centred.any() and np.all(cut[centred] == 0)  # a cutout as large as the image, centred in it, blanks it
  for name in ("translation_ratio", "cutout_ratio"):
    with pytest.raises(ValueError, match=rf"^{name} must be in \[0, 1\], got 1.01$"):
      diff_augment(x, key, policy=FULL, **{name: 1.01})


class _AugmentGroup:
  """An ``augment`` config group, as any object with its attributes."""

  def __init__(self, policy, translation_ratio=0.125, cutout_ratio=0.5):
    self.policy, self.translation_ratio, self.cutout_ratio = policy, translation_ratio, cutout_ratio


def test_build_augmentation_of_a_config_group():
  assert augment.build_augmentation(_AugmentGroup("")) is None
  x, key = _images(0), jax.random.key(3)
  augmentation = augment.build_augmentation(_AugmentGroup("translation, cutout", 0.25, 0.25))
  np.testing.assert_array_equal(augmentation(x, key), _augment(x, key, policy=("translation", "cutout"),
                                                               translation_ratio=0.25, cutout_ratio=0.25))
  with pytest.raises(ValueError, match="^augment.policy: Unknown DiffAugment op 'zoom'"):
    augment.build_augmentation(_AugmentGroup("zoom"))
  # The ratios are checked even when the policy is empty: a config with them wrong is wrong when augmentation is on.
  with pytest.raises(ValueError, match=r"^augment.cutout_ratio must be in \[0, 1\], got -0.5$"):
    augment.build_augmentation(_AugmentGroup("", cutout_ratio=-0.5))


_SHARDED_ON_FOUR_DEVICES = """
import sys, jax, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from wgan_gp_jax.augment import diff_augment
assert len(jax.devices()) == 4
mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
x = jax.device_put(np.load(sys.argv[1]), NamedSharding(mesh, P("data")))
augment = jax.jit(diff_augment, static_argnames="policy").lower(x, jax.random.key(13), policy=sys.argv[3]).compile()
collectives = [op for op in ("all-gather", "all-reduce", "all-to-all", "collective-permute") if op in augment.as_text()]
assert not collectives, collectives  # Every device augments its own examples.
out = augment(x, jax.random.key(13))
assert out.sharding.spec[0] == "data", out.sharding
np.save(sys.argv[2], np.asarray(out))
print("ok")
"""


def test_a_batch_sharded_over_devices_gives_the_same_result_without_communication(tmp_path):
  x = _images(0, SHAPE)
  np.save(tmp_path / "x.npy", np.asarray(x))
  environment = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=os.environ["XLA_FLAGS"] + " --xla_force_host_platform_device_count=4")
  result = subprocess.run([sys.executable, "-c", _SHARDED_ON_FOUR_DEVICES, str(tmp_path / "x.npy"),
                           str(tmp_path / "out.npy"), FULL], cwd=REPO_ROOT, env=environment, capture_output=True,
                          text=True, timeout=120, check=False)
  assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
  np.testing.assert_allclose(np.load(tmp_path / "out.npy"), _augment(x, jax.random.key(13), policy=FULL), rtol=1e-6,
                             atol=1e-6)
