"""DiffAugment: differentiable, per-example random augmentation of image batches.

The critic of a data-efficient GAN sees real and generated images through
random augmentations ``T`` of one distribution, ``D(T(x))`` and ``D(T(G(z)))``,
in both the critic and the generator losses. Because ``T`` is differentiable,
the generator is trained through it, so it learns the data distribution and
not the augmented one.

``diff_augment`` is a pure function of ``(x, key)``: it works under
``jax.jit``, ``jax.vmap``, ``jax.grad`` and forward-mode differentiation, on
batches sharded over devices, and draws every random number per example. Each
op of ``POLICIES`` draws from its own key, derived from ``key`` and the op's
index in ``POLICIES``, so adding, removing or reordering ops never changes the
random numbers of another op.

References:
  Zhao et al., `Differentiable Augmentation for Data-Efficient GAN Training
  <https://arxiv.org/abs/2006.10738>`_, 2020, and the authors' code,
  https://github.com/mit-han-lab/data-efficient-gans (``DiffAugment_pytorch.py``).
"""

from __future__ import annotations

import functools
import operator
from typing import TYPE_CHECKING, Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

if TYPE_CHECKING:  # the core needs no ml_collections: any object with the config's attributes will do
  import ml_collections

POLICIES = ("color", "translation", "cutout")
# ``(x, key) -> x``: an augmentation of a batch, as ``build_augmentation`` makes.
Augmentation = Callable[[jax.Array, jax.Array], jax.Array]


def parse_policy(policy: str | Sequence[str]) -> tuple[str, ...]:
  """The op names of a policy, in the order given.

  Accepts a comma-separated string such as ``"color,translation,cutout"``
  (whitespace around names and empty entries are ignored, so ``""`` gives
  ``()``) or a sequence of names. Raises ``ValueError`` on an unknown name or
  a name given twice (each op has one key, so a repeat would apply the same draw twice).
  """
  if isinstance(policy, str):
    names = tuple(name.strip() for name in policy.split(","))
    names = tuple(name for name in names if name)
  else:
    names = tuple(policy)
  for name in names:
    if name not in POLICIES:
      raise ValueError(f"Unknown DiffAugment op {name!r} in policy {policy!r}; the ops are {', '.join(POLICIES)}.")
  repeated = sorted({name for name in names if names.count(name) > 1})
  if repeated:
    raise ValueError(f"DiffAugment policy {policy!r} names {', '.join(repeated)} more than once.")
  return names


# Each op draws its random numbers as 32-bit words, one row per example, from its own key.
_WORDS_PER_EXAMPLE = {"color": 3, "translation": 2, "cutout": 2}


def _op_words(key: jax.Array, name: str, batch_size: int) -> jax.Array:
  """The op's random words ``(N, k)``, from ``jax.random.split(key, len(POLICIES))[POLICIES.index(name)]``.

  One ``jax.random.bits`` call per op and plain integer arithmetic afterwards, rather than a ``jax.random.uniform``
  or ``jax.random.randint`` call per parameter, which compile much more slowly on CPU.
  """
  op_key = jax.random.split(key, len(POLICIES))[POLICIES.index(name)]
  return jax.random.bits(op_key, (batch_size, _WORDS_PER_EXAMPLE[name]), jnp.uint32)


def _uniform(words: jax.Array, minval: float, maxval: float) -> jax.Array:
  """Float32 uniform on ``[minval, maxval)`` from the top 23 bits, as ``jax.random.uniform``.

  For the ranges used here the affine map is exact, so the upper end is never reached.
  """
  unit = lax.shift_right_logical(words, jnp.uint32(9)).astype(jnp.float32) * (2.0**-23)
  return minval + (maxval - minval) * unit


def _randint(words: jax.Array, minval: int, maxval: int) -> jax.Array:
  """Int32 uniform on ``[minval, maxval]``, inclusive: a word modulo the range, bias below ``range / 2**32``."""
  return (words % jnp.uint32(maxval - minval + 1)).astype(jnp.int32) + minval


def _color_factors(key: jax.Array, batch_size: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-example ``(brightness, saturation, contrast)``, each ``(N,)`` float32.

  Uniform on ``[-0.5, 0.5)``, ``[0, 2)`` and ``[0.5, 1.5)``.
  """
  words = _op_words(key, "color", batch_size)
  return _uniform(words[:, 0], -0.5, 0.5), _uniform(words[:, 1], 0.0, 2.0), _uniform(words[:, 2], 0.5, 1.5)


def _color(x: jax.Array, key: jax.Array) -> jax.Array:
  """Brightness, saturation and contrast, as the authors' ``rand_brightness, rand_saturation, rand_contrast``."""
  brightness, saturation, contrast = (
      factor.astype(x.dtype)[:, None, None, None] for factor in _color_factors(key, x.shape[0]))
  x = x + brightness
  channels = x.shape[-1]
  if channels > 1:  # With one channel the channel mean is the image itself: saturation is the identity.
    # The channel mean as a sum of slices: XLA's CPU reduction over a minor axis of 3 and its broadcast back are
    # several times slower.
    mean = functools.reduce(operator.add, (x[..., c:c + 1] for c in range(1, channels)), x[..., :1]) / channels
    x = (x - mean) * saturation + mean
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  return (x - mean) * contrast + mean


def _side(size: int, ratio: float) -> int:
  """``int(size * ratio + 0.5)``, the authors' rounding for shifts and cutout sides."""
  return int(size * ratio + 0.5)


def _translation_offsets(key: jax.Array, shape: Sequence[int], ratio: float) -> tuple[jax.Array, jax.Array]:
  """Per-example integer offsets ``(rows, cols)``, each ``(N,)``.

  Uniform on ``[-s, s]`` with ``s = int(H * ratio + 0.5)`` for rows and ``int(W * ratio + 0.5)`` for columns.
  """
  n, h, w, _ = shape
  words = _op_words(key, "translation", n)
  shift_h, shift_w = _side(h, ratio), _side(w, ratio)
  return _randint(words[:, 0], -shift_h, shift_h), _randint(words[:, 1], -shift_w, shift_w)


def _translation(x: jax.Array, key: jax.Array, ratio: float) -> jax.Array:
  """``out[n, i, j] = x[n, i + rows_n, j + cols_n]``, zero where that falls outside the image.

  Pad by the largest shift, then one ``dynamic_slice`` per example under
  ``vmap`` (one XLA gather with a batch dimension): on CPU as fast as a
  ``take_along_axis`` gather forwards and faster backwards (its transpose is a
  batched ``dynamic_update_slice``), much faster than one-hot matmuls, and local
  to each device for a batch-sharded input. Start indices never need clamping:
  they lie in ``[0, 2 * shift]``.
  """
  _, h, w, c = x.shape
  shift_h, shift_w = _side(h, ratio), _side(w, ratio)
  rows, cols = _translation_offsets(key, x.shape, ratio)
  padded = jnp.pad(x, ((0, 0), (shift_h, shift_h), (shift_w, shift_w), (0, 0)))
  zero = jnp.zeros((), rows.dtype)

  def shift_one(image: jax.Array, row: jax.Array, col: jax.Array) -> jax.Array:
    return lax.dynamic_slice(image, (shift_h + row, shift_w + col, zero), (h, w, c))

  return jax.vmap(shift_one)(padded, rows, cols)


def _cutout_centres(key: jax.Array, shape: Sequence[int], ratio: float) -> tuple[jax.Array, jax.Array]:
  """Per-example centres ``(rows, cols)``, each ``(N,)``, uniform on ``[0, H - side_h % 2]`` (``W`` for cols)."""
  n, h, w, _ = shape
  words = _op_words(key, "cutout", n)
  return _randint(words[:, 0], 0, h - _side(h, ratio) % 2), _randint(words[:, 1], 0, w - _side(w, ratio) % 2)


def _cutout_mask(key: jax.Array, shape: Sequence[int], ratio: float, dtype) -> jax.Array:
  """The multiplicative mask ``(N, H, W, 1)``: 0 inside each example's rectangle, 1 elsewhere.

  As in the authors' code the rectangle has sides ``int(H * ratio + 0.5)`` by
  ``int(W * ratio + 0.5)`` and covers rows ``[c - side // 2, c - side // 2 + side)``
  for the centre row ``c`` (columns alike), clipped at the border; built from
  iota comparisons, not a scatter.
  """
  _, h, w, _ = shape
  side_h, side_w = _side(h, ratio), _side(w, ratio)
  centre_rows, centre_cols = _cutout_centres(key, shape, ratio)
  top = (centre_rows - side_h // 2)[:, None, None, None]
  left = (centre_cols - side_w // 2)[:, None, None, None]
  rows = lax.broadcasted_iota(top.dtype, (1, h, 1, 1), 1)
  cols = lax.broadcasted_iota(left.dtype, (1, 1, w, 1), 2)
  inside = (rows >= top) & (rows < top + side_h) & (cols >= left) & (cols < left + side_w)
  return jnp.where(inside, 0, 1).astype(dtype)


def _cutout(x: jax.Array, key: jax.Array, ratio: float) -> jax.Array:
  return x * _cutout_mask(key, x.shape, ratio, x.dtype)


def check_ratio(value: float, name: str) -> None:
  """Raises ``ValueError`` unless ``0 <= value <= 1``: the translation and cutout ratios of the image side.

  1 is a ratio of its own: a shift by up to a whole side (an image shifted by exactly one side is all zeros) and a
  cutout as large as the image (centred in it, it blanks every pixel). Past 1 nothing more can be shifted out or cut.
  """
  if not 0.0 <= value <= 1.0:
    raise ValueError(f"{name} must be in [0, 1], got {value}")


def diff_augment(
    x: jax.Array,
    key: jax.Array,
    *,
    policy: str | Sequence[str],
    translation_ratio: float = 0.125,
    cutout_ratio: float = 0.5,
) -> jax.Array:
  r"""DiffAugment of an NHWC batch, with fresh random parameters for every example.

  The ops run in the order the policy names them (the paper uses
  ``"color,translation,cutout"``); each matches the authors' code:

  * ``color``: brightness ``x + b``, ``b ~ U[-0.5, 0.5)``; then saturation
    ``(x - m) s + m``, ``s ~ U[0, 2)``, ``m`` the mean over channels (the
    identity for one channel); then contrast ``(x - M) t + M``,
    ``t ~ U[0.5, 1.5)``, ``M`` the mean over ``H, W, C``.
  * ``translation``: shift by integer offsets uniform on ``[-s, s]`` with
    ``s = int(H * translation_ratio + 0.5)`` for rows (``W`` for columns),
    drawn independently; pixels shifted in are 0.
  * ``cutout``: set to 0 a ``int(H * cutout_ratio + 0.5)`` by
    ``int(W * cutout_ratio + 0.5)`` rectangle (a square for square images) at a
    random centre, clipped at the border.

  Nothing is clipped, as in the authors' code (clipping would zero the
  generator's gradients wherever it bites). Translation and cutout only copy
  values or write 0 (mid-grey in ``[-1, 1]``), so they keep every value within
  ``[min(x, 0), max(x, 0)]``. Color widens the range: for inputs in ``[-1, 1]``
  with ``C`` channels its output satisfies ``|y| < 5.5 - 3 / C``, that is
  ``|y| < 4.5`` for RGB and ``|y| < 2.5`` for one channel (approached when one
  channel of one pixel is 1 and all else is -1, with ``b, s, t`` near their
  upper ends). So the full policy's output lies in ``(-4.5, 4.5)`` for RGB
  inputs in ``[-1, 1]``.

  Every op draws its parameters, a few 32-bit words per example, with one
  ``jax.random.bits`` call from its own key,
  ``jax.random.split(key, len(POLICIES))[POLICIES.index(name)]``; the draws do
  not depend on ``x`` or on the rest of the policy, so
  ``diff_augment(x, k, policy="translation,cutout")`` equals ``cutout`` applied
  with ``k`` to ``translation`` applied with ``k``. Uniform floats take the top
  23 bits (as ``jax.random.uniform``), drawn in float32 and cast to ``x``'s
  dtype; integers are a word modulo the range (bias below ``range / 2**32``).

  References:
    Zhao et al., `Differentiable Augmentation for Data-Efficient GAN Training
    <https://arxiv.org/abs/2006.10738>`_, 2020 (Section 3, and
    ``DiffAugment_pytorch.py`` in https://github.com/mit-han-lab/data-efficient-gans).

  Args:
    x: images ``(N, H, W, C)``, floating, normally in ``[-1, 1]``.
    key: PRNG key; use a fresh one per call (and different ones for the real
      and generated batches unless you mean them to share augmentations).
    policy: ops from ``POLICIES``, as a comma-separated string or a sequence;
      empty means no augmentation.
    translation_ratio: largest shift as a fraction of the image side, in ``[0, 1]``.
    cutout_ratio: cutout side as a fraction of the image side, in ``[0, 1]``.

  Returns:
    The augmented batch, with the shape and dtype of ``x`` (``x`` itself for an
    empty policy).
  """
  names = parse_policy(policy)
  check_ratio(translation_ratio, "translation_ratio")
  check_ratio(cutout_ratio, "cutout_ratio")
  images = jnp.asarray(x)
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(f"x must have a floating dtype, got {images.dtype}.")
  if images.ndim != 4:
    raise ValueError(f"x must be a batch of images of shape (N, H, W, C), got shape {images.shape}.")
  if not names:
    return x
  ops: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
      "color": _color,
      "translation": lambda images, key: _translation(images, key, translation_ratio),
      "cutout": lambda images, key: _cutout(images, key, cutout_ratio),
  }
  for name in names:
    images = ops[name](images, key)
  return images


def build_augmentation(config: ml_collections.ConfigDict) -> Augmentation | None:
  """``(x, key) -> x`` applying ``diff_augment`` with the ``augment`` config group's ``policy``, ``translation_ratio``
  and ``cutout_ratio``, or None for an empty policy. Raises ``ValueError`` naming the key of a value that cannot make
  one (the ratios are checked even when the policy is empty)."""
  try:
    policy = parse_policy(config.policy)
  except ValueError as error:
    raise ValueError(f"augment.policy: {error}") from None
  check_ratio(config.translation_ratio, "augment.translation_ratio")
  check_ratio(config.cutout_ratio, "augment.cutout_ratio")
  if not policy:
    return None
  return functools.partial(diff_augment, policy=policy, translation_ratio=config.translation_ratio,
                           cutout_ratio=config.cutout_ratio)
