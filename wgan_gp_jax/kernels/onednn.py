"""oneDNN's direct convolutions as XLA:CPU custom calls: ``conv``'s three faces without patch matrices; and
oneDNN's batch normalisation, the ReLU fused in (``norm_forward``, ``norm_backward``: ``layers.batch_norm``'s).

On XLA:CPU ``conv`` writes every convolution as matrix products over im2col
patches or Winograd tiles, matrices several times the size of the output that
are written and read back. oneDNN (the library behind PyTorch's CPU
convolutions) computes them directly in cache-sized blocks. The faces Winograd
takes stay on its tiles, which beat oneDNN's inside the training steps
(``conv._correlate_cpu`` says which face takes which).

``onednn_kernels.cc`` (XLA FFI handlers) is compiled on first use with the
machine's C++ compiler (``$CXX``, else ``g++``) against the pip packages
``onednn-cpu-tbb`` and ``onednn-devel-cpu-tbb`` (Linux x86-64,
``requirements.txt``; they bring ``tbb`` and ``intel-cmplr-lib-rt``) and jaxlib's FFI headers, into a cache folder
(``$WGAN_GP_JAX_CACHE``, else ``~/.cache/wgan_gp_jax``) named by a hash of all
of them; later processes load it from there. Without those packages, on another
machine, or with ``WGAN_GP_JAX_ONEDNN=0``, ``conv`` uses its matrix products as
before (the same function to float32 rounding; the tests check both against
``lax.conv_general_dilated``). ``WGAN_GP_JAX_ONEDNN=1`` makes a missing or
failing build an error instead of a warning.

float32 only. One oneDNN call runs at a time, on TBB's threads; its results are
the same from call to call. The TBB build, not the OpenMP one: OpenMP's
``libgomp.so.1`` would be shared with PyTorch's (same name) in a process that
imports both, and with our threads counted beside PyTorch's, libgomp shortens
PyTorch's spin-waits, slowing PyTorch down.
"""

import contextlib
import ctypes
import functools
import hashlib
import importlib.metadata
import math
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings

import jax
import jax.numpy as jnp
import numpy as np

ENVIRONMENT_VARIABLE = "WGAN_GP_JAX_ONEDNN"
CACHE_VARIABLE = "WGAN_GP_JAX_CACHE"
RUNTIME_PACKAGE, HEADERS_PACKAGE = "onednn-cpu-tbb", "onednn-devel-cpu-tbb"
# What that build of libdnnl loads: TBB's threads, and the Intel compiler's runtime (libimf, libintlc).
DEPENDENCIES = {"tbb": "lib/libtbb.so.12", "intel-cmplr-lib-rt": "lib/libimf.so"}
SOURCE = pathlib.Path(__file__).with_name("onednn_kernels.cc")
_TARGETS = {"correlate": "OnednnCorrelate", "scatter": "OnednnScatter", "weight": "OnednnWeight",
            "scatter_bias": "OnednnScatterBias",
            "norm_forward": "OnednnNormForward", "norm_backward": "OnednnNormBackward"}
_TARGET_PREFIX = "wgan_gp_jax_onednn_"


class Unavailable(RuntimeError):
  """oneDNN's convolutions cannot be used here; the message says why."""


class NotInstalled(Unavailable):
  """The oneDNN packages are not installed, or not made for this machine: the products path, without a warning."""


def _package_file(package: str, suffix: str) -> pathlib.Path:
  try:
    files = importlib.metadata.distribution(package).files or []
  except importlib.metadata.PackageNotFoundError:
    raise NotInstalled(
        f"the pip package {package} is not installed (requirements.txt pins it on Linux x86-64)") from None
  for file in files:  # the wheels' data files are listed relative to site-packages ("../../libdnnl.so.3")
    path = pathlib.Path(file.locate()).resolve()
    if path.as_posix().endswith("/" + suffix):
      return path
  raise Unavailable(f"the pip package {package} has no file ending in {suffix}")


def cache_dir() -> pathlib.Path:
  if os.environ.get(CACHE_VARIABLE):
    return pathlib.Path(os.environ[CACHE_VARIABLE])
  return pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") / "wgan_gp_jax"


def build(directory: pathlib.Path | None = None) -> pathlib.Path:
  """The compiled handlers' shared library, built into ``directory`` (default ``cache_dir()``) unless already there.

  Raises ``Unavailable`` (with the compiler's last lines) when the packages, the compiler or the build fail.
  """
  if sys.platform != "linux" or platform.machine() != "x86_64":
    raise NotInstalled(f"the oneDNN packages are built for Linux x86-64, not {sys.platform} {platform.machine()}")
  library = _package_file(RUNTIME_PACKAGE, "lib/libdnnl.so.3")
  dependencies = [_package_file(package, file).parent for package, file in DEPENDENCIES.items()]
  headers = _package_file(HEADERS_PACKAGE, "include/oneapi/dnnl/dnnl.hpp").parents[2]
  compiler = os.environ.get("CXX", "g++")
  if shutil.which(compiler) is None:
    raise Unavailable(f"no C++ compiler {compiler!r} on PATH (set $CXX) to build {SOURCE.name}")
  command = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-w", f"-I{headers}", f"-I{jax.ffi.include_dir()}",
             str(SOURCE), str(library),
             # DT_RPATH, where libdnnl's own dependencies are looked up too (unlike in DT_RUNPATH).
             "-Wl,--disable-new-dtags"]
  command += [f"-Wl,-rpath,{folder}" for folder in dict.fromkeys([library.parent] + dependencies)]
  digest = hashlib.sha256(SOURCE.read_bytes())
  for part in command + [jax.__version__, _compiler_version(compiler), str(library.stat().st_size)]:
    digest.update(part.encode() + b"\0")
  directory = cache_dir() if directory is None else pathlib.Path(directory)
  target = directory / f"onednn_kernels-{digest.hexdigest()[:16]}.so"
  if target.exists():
    return target
  directory.mkdir(parents=True, exist_ok=True)
  # Built under a name of its own, then renamed: processes building at once each get a whole library.
  handle, partial = tempfile.mkstemp(dir=directory, prefix=target.stem + ".", suffix=".partial")
  os.close(handle)
  try:
    result = subprocess.run(command + ["-o", partial], capture_output=True, text=True)
    if result.returncode != 0:
      tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
      raise Unavailable(f"building {SOURCE.name} failed ({' '.join(command)}):\n{tail}")
    os.replace(partial, target)
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  return target


def _compiler_version(compiler: str) -> str:
  result = subprocess.run([compiler, "--version"], capture_output=True, text=True)
  return result.stdout.splitlines()[0] if result.stdout else ""


_switched_off = False


@contextlib.contextmanager
def off():
  """Functions traced inside use conv's matrix products: a testing and benchmarking tool for the kernels' paths without
  oneDNN (code that must not use oneDNN says so with ``conv``'s ``use_onednn=False``). ``jax.jit`` keeps what it
  traced: trace fresh functions, or call ``jax.clear_caches()`` first."""
  global _switched_off
  previous, _switched_off = _switched_off, True
  try:
    yield
  finally:
    _switched_off = previous


@functools.cache
def _library() -> ctypes.CDLL | None:
  """Builds, loads and registers the handlers once per process; None (with a warning) where that fails."""
  setting = os.environ.get(ENVIRONMENT_VARIABLE, "")
  if setting not in ("", "0", "1"):
    raise ValueError(f"{ENVIRONMENT_VARIABLE} must be 0, 1 or unset, got {setting!r}.")
  if setting == "0":
    return None
  try:
    library = ctypes.CDLL(str(build()))
  except (Unavailable, OSError) as error:
    if setting == "1":
      raise Unavailable(f"{ENVIRONMENT_VARIABLE}=1 but oneDNN's convolutions cannot be used: {error}") from error
    if not isinstance(error, NotInstalled):
      warnings.warn(f"oneDNN's convolutions are off, conv uses its matrix products: {error}", stacklevel=3)
    return None
  for face, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(_TARGET_PREFIX + face, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
  library.WgangpOnednnNormMaskBytes.restype = ctypes.c_int64
  library.WgangpOnednnNormMaskBytes.argtypes = [ctypes.c_int64] * 4 + [ctypes.c_float, ctypes.c_int64]
  return library


def _load() -> bool:
  return _library() is not None


def enabled(dtype) -> bool:
  """Whether ``conv``'s CPU faces of ``dtype`` operands go to oneDNN: float32, with the handlers loaded.

  Decided when a function is traced, for the CPU branch of ``conv``'s ``platform_dependent``; on a machine whose
  default backend is not the CPU nothing is built.
  """
  return (not _switched_off and jnp.dtype(dtype) == jnp.float32 and jax.default_backend() == "cpu" and _load())


def version() -> str | None:
  """The oneDNN release conv's float32 CPU faces use here (``onednn-cpu-tbb``'s), None where they are off."""
  return importlib.metadata.version(RUNTIME_PACKAGE) if enabled(jnp.float32) else None


def _call(face: str, a: jax.Array, b: jax.Array, geometry, *extra: jax.Array) -> jax.Array:
  if not _load():
    raise Unavailable(f"oneDNN's convolutions are off here ({ENVIRONMENT_VARIABLE}=0, or they failed to build: see the"
                      " warning); conv's functions choose them only where enabled() says so")
  for operand in (a, b):
    if operand.dtype != jnp.float32 or operand.ndim != 4:
      raise ValueError(f"oneDNN's {face} takes 4-D float32 operands, got {operand.dtype} {operand.shape}.")
  for operand in extra:
    if operand.dtype != jnp.float32 or operand.shape != (b.shape[2],):
      raise ValueError(f"oneDNN's {face} takes a float32 bias of shape {(b.shape[2],)}, got {operand.dtype} "
                       f"{operand.shape}.")
  height, width = geometry.axes
  shape = {"correlate": (a.shape[0], height.low_size, width.low_size, b.shape[3]),
           "scatter": (a.shape[0], height.high_size, width.high_size, b.shape[2]),
           "scatter_bias": (a.shape[0], height.high_size, width.high_size, b.shape[2]),
           "weight": (height.kernel, width.kernel, a.shape[3], b.shape[3])}[face]
  attributes = dict(stride_h=height.stride, stride_w=width.stride, low_h=height.low_padding, low_w=width.low_padding,
                    high_h=height.high_padding, high_w=width.high_padding)
  call = jax.ffi.ffi_call(_TARGET_PREFIX + face, jax.ShapeDtypeStruct(shape, a.dtype), vmap_method="sequential")
  return call(a, b, *extra, **{name: np.int64(value) for name, value in attributes.items()})


def correlate(x: jax.Array, w: jax.Array, geometry) -> jax.Array:
  """``conv.correlate`` by oneDNN's forward convolution."""
  return _call("correlate", x, w, geometry)


def scatter(y: jax.Array, w: jax.Array, geometry, bias: jax.Array | None = None) -> jax.Array:
  """``conv.scatter`` by oneDNN's backward-data convolution; with ``bias`` (one per output channel), by oneDNN's
  deconvolution, which adds it in its kernel."""
  return _call("scatter", y, w, geometry) if bias is None else _call("scatter_bias", y, w, geometry, bias)


def weight(x: jax.Array, y: jax.Array, geometry) -> jax.Array:
  """``conv.weight`` by oneDNN's backward-weights convolution."""
  return _call("weight", x, y, geometry)


def _shape_4d(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
  """(..., C) as (M, 1, 1, C) for oneDNN's NHWC batch norm (M every other axis); 4-D shapes as they are."""
  return tuple(shape) if len(shape) == 4 else (math.prod(shape[:-1]), 1, 1, shape[-1])


def _as_4d(x: jax.Array) -> jax.Array:
  return x.reshape(_shape_4d(x.shape))


def norm_forward(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float,
                 relu: bool) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Training-mode batch norm over every axis but the last, by oneDNN, then ReLU where ``relu``: ``(y, mean, var,
  mask)``, the batch's mean and biased variance, and the ReLU's mask (bits, oneDNN's own layout) for
  ``norm_backward``. float32; the statistics of ``(x - mean)`` (two passes), not flax's ``E[x^2] - E[x]^2``."""
  if not _load():
    raise Unavailable(f"oneDNN is off here ({ENVIRONMENT_VARIABLE}=0, or it failed to build: see the warning)")
  if x.dtype != jnp.float32 or x.ndim < 2:
    raise ValueError(f"oneDNN's batch norm takes float32 inputs of 2 or more axes, got {x.dtype} {x.shape}.")
  x4 = _as_4d(x)
  channels = (x.shape[-1],)
  call = jax.ffi.ffi_call(_TARGET_PREFIX + "norm_forward", (
      jax.ShapeDtypeStruct(x4.shape, jnp.float32), jax.ShapeDtypeStruct(channels, jnp.float32),
      jax.ShapeDtypeStruct(channels, jnp.float32),
      jax.ShapeDtypeStruct(norm_mask_shape(x.shape, epsilon, relu), jnp.uint8)), vmap_method="sequential")
  y, mean, var, mask = call(x4, scale, bias, epsilon=np.float32(epsilon), relu=np.int64(relu))
  return y.reshape(x.shape), mean, var, mask


def norm_backward(x: jax.Array, scale: jax.Array, mean: jax.Array, var: jax.Array, mask: jax.Array,
                  y_bar: jax.Array, epsilon: float, relu: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The gradients ``(x_bar, scale_bar, bias_bar)`` of ``norm_forward``'s ``y`` (its statistics as it gave them)."""
  x4 = _as_4d(x)
  channels = (x.shape[-1],)
  call = jax.ffi.ffi_call(_TARGET_PREFIX + "norm_backward", (
      jax.ShapeDtypeStruct(x4.shape, jnp.float32), jax.ShapeDtypeStruct(channels, jnp.float32),
      jax.ShapeDtypeStruct(channels, jnp.float32)), vmap_method="sequential")
  x_bar, scale_bar, bias_bar = call(x4, _as_4d(y_bar), scale, mean, var, mask, epsilon=np.float32(epsilon),
                                    relu=np.int64(relu))
  return x_bar.reshape(x.shape), scale_bar, bias_bar


def norm_mask_shape(x_shape: tuple[int, ...], epsilon: float, relu: bool) -> tuple[int]:
  """The shape of ``norm_forward``'s mask (bytes) for an input of ``x_shape``; (0,) without the ReLU."""
  size = _library().WgangpOnednnNormMaskBytes(*_shape_4d(x_shape), epsilon, int(relu))
  if size < 0:
    raise Unavailable(f"oneDNN has no batch normalisation for inputs of shape {x_shape} here")
  return (size,)
