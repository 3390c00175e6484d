"""oneDNN's convolutions behind XLA FFI: built once into a cache, loaded, off on request, and the same function as
conv's matrix products (tests/test_layers.py checks values and derivatives on both CPU paths)."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wgan_gp_jax.kernels import conv, onednn

@pytest.fixture
def loaded(onednn_convolutions):
  """oneDNN's convolutions are loaded here (else conftest's ``onednn_convolutions`` skips the test, or fails it where
  $WGAN_GP_JAX_REQUIRE names onednn)."""


def _geometry_and_operands(channels=8):
  x = jax.random.normal(jax.random.key(0), (3, 9, 8, channels))
  w = jax.random.normal(jax.random.key(1), (5, 5, channels, 6))
  geometry = conv.conv_geometry(x.shape[1:3], w.shape[:2], (2, 2), "SAME")
  y = jax.random.normal(jax.random.key(2), (3, geometry.height.low_size, geometry.width.low_size, 6))
  return geometry, x, w, y


def test_build_compiles_once_into_the_cache_and_reuses_it(loaded, tmp_path):
  library = onednn.build(tmp_path)
  assert library.parent == tmp_path and library.suffix == ".so"
  built_at = library.stat().st_mtime_ns
  assert onednn.build(tmp_path) == library and library.stat().st_mtime_ns == built_at
  assert [path.name for path in tmp_path.iterdir()] == [library.name]  # no partial build left behind


def test_a_failing_build_says_why_and_leaves_nothing(loaded, tmp_path, monkeypatch):
  monkeypatch.setenv("CXX", "no-such-compiler")
  with pytest.raises(onednn.Unavailable, match="no C\\+\\+ compiler 'no-such-compiler'"):
    onednn.build(tmp_path)
  fake_compiler = tmp_path / "failing-c++"
  fake_compiler.write_text("#!/bin/sh\necho 'g++ (fake) 1.0'\necho 'error: out of luck' >&2\nexit 1\n")
  fake_compiler.chmod(0o755)
  monkeypatch.setenv("CXX", str(fake_compiler))
  cache = tmp_path / "cache"
  with pytest.raises(onednn.Unavailable, match="(?s)building onednn_kernels.cc failed.*out of luck"):
    onednn.build(cache)
  assert list(cache.iterdir()) == []


def _in_a_new_process(script: str, **environment) -> subprocess.CompletedProcess:
  """Runs ``script`` with ``environment`` over this one's, less WGAN_GP_JAX_ONEDNN (which CI sets to 1): a test sets
  it where it means to."""
  inherited = {key: value for key, value in os.environ.items() if key != onednn.ENVIRONMENT_VARIABLE}
  return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                        env={**inherited, "PYTHONPATH": os.getcwd(), **environment})


def _enabled_in_a_new_process(**environment) -> subprocess.CompletedProcess:
  return _in_a_new_process(
      "import jax.numpy as jnp; from wgan_gp_jax.kernels import onednn; print(onednn.enabled(jnp.float32))", **environment)


def test_the_environment_variable_turns_it_off_requires_it_or_is_refused(loaded, tmp_path):
  off = _enabled_in_a_new_process(WGAN_GP_JAX_ONEDNN="0")
  assert off.returncode == 0 and off.stdout.split() == ["False"], off.stderr
  required = _enabled_in_a_new_process(WGAN_GP_JAX_ONEDNN="1")
  assert required.returncode == 0 and required.stdout.split() == ["True"], required.stderr
  # Required but not buildable: an error naming the cause; not required: a warning, and the products.
  broken = {"CXX": "no-such-compiler", "WGAN_GP_JAX_CACHE": str(tmp_path)}
  failed = _enabled_in_a_new_process(WGAN_GP_JAX_ONEDNN="1", **broken)
  assert failed.returncode != 0 and "WGAN_GP_JAX_ONEDNN=1 but" in failed.stderr and "no-such-compiler" in failed.stderr
  fallback = _enabled_in_a_new_process(**broken)
  assert fallback.returncode == 0 and fallback.stdout.split() == ["False"]
  assert "oneDNN's convolutions are off, conv uses its matrix products" in fallback.stderr
  refused = _enabled_in_a_new_process(WGAN_GP_JAX_ONEDNN="yes")
  assert refused.returncode != 0 and "WGAN_GP_JAX_ONEDNN must be 0, 1 or unset, got 'yes'" in refused.stderr


def test_without_the_packages_it_is_off_without_a_warning():
  """Where requirements.txt installs no oneDNN (not Linux x86-64, or a trimmed environment): the products, silently."""
  script = ("import importlib.metadata, warnings, jax.numpy as jnp\n"
            "def absent(name): raise importlib.metadata.PackageNotFoundError(name)\n"
            "importlib.metadata.distribution = absent\n"
            "warnings.simplefilter('error')\n"
            "from wgan_gp_jax.kernels import onednn\n"
            "print(onednn.enabled(jnp.float32), onednn.version())\n")
  ran = _in_a_new_process(script)
  assert ran.returncode == 0 and ran.stdout.split() == ["False", "None"], ran.stderr


def test_only_float32_goes_to_onednn(loaded):
  assert not onednn.enabled(jnp.bfloat16) and not onednn.enabled(jnp.float16)
  geometry, x, w, _ = _geometry_and_operands()
  with pytest.raises(ValueError, match="4-D float32 operands, got bfloat16"):
    onednn.correlate(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), geometry)
  with pytest.raises(ValueError, match="4-D float32 operands"):
    onednn.weight(x[0], x[0], geometry)


def test_faces_are_bitwise_repeatable_and_batch_under_vmap(loaded):
  geometry, x, w, y = _geometry_and_operands()
  faces = jax.jit(lambda x, w, y: (onednn.correlate(x, w, geometry), onednn.scatter(y, w, geometry),
                                   onednn.weight(x, y, geometry)))
  first, second = faces(x, w, y), faces(x, w, y)
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a, b)
  # vmap over a leading axis of every operand: each slice is its own call.
  stacked = jax.vmap(faces)(jnp.stack([x, 2 * x]), jnp.stack([w, -w]), jnp.stack([y, y]))
  for batched, single, scale in zip(stacked, first, (-2.0, -1.0, 2.0)):
    np.testing.assert_array_equal(batched[0], single)
    np.testing.assert_allclose(batched[1], scale * single, rtol=1e-6, atol=1e-5)


def test_inception_keeps_its_strided_convolutions_on_the_products(loaded):
  """The FID network's features stay those of the reference caches computed before oneDNN (it was no faster)."""
  from wgan_gp_jax.metrics import inception
  x, kernel = jnp.ones((2, 9, 9, 8)), jnp.ones((3, 3, 8, 4))
  strided = jax.jit(lambda x, kernel: inception._cpu_conv(x, kernel, 2, (0, 0))).lower(x, kernel).as_text()
  assert "wgan_gp_jax_onednn" not in strided
  training = jax.jit(lambda x, kernel: conv.conv2d(x, kernel, (2, 2), "VALID")).lower(x, kernel).as_text()
  assert "wgan_gp_jax_onednn_correlate" in training


def test_a_primitive_runs_on_a_thread_other_than_the_one_that_made_it(loaded):
  """XLA runs a handler on whichever of its threads is free. With oneDNN's default (library) scratchpad, a primitive
  used the running thread's buffer, sized by the primitives made on that thread: here none, and the call segfaulted
  (before 2026-12-03's fix; with a smaller buffer it wrote past its end). A new process: the thread-local state is
  fresh, and a crash is a return code, not a lost test worker."""
  script = """
import threading
import jax, numpy as np
from wgan_gp_jax.kernels import conv, onednn
# An explicit padding oneDNN runs by its im2col GEMM implementation, whose scratchpad holds the patches.
geometry = conv.conv_geometry((6, 6), (3, 3), (1, 1), ((2, 0), (1, 3)))
w = jax.random.normal(jax.random.key(1), (3, 3, 8, 4))
y = jax.random.normal(jax.random.key(2), (2, geometry.height.low_size, geometry.width.low_size, 4))
scatter = jax.jit(lambda y, w: onednn.scatter(y, w, geometry))
made_here = np.asarray(scatter(y, w))
elsewhere = []
thread = threading.Thread(target=lambda: elsewhere.append(np.asarray(scatter(y, w))))
thread.start()
thread.join()
print(np.array_equal(made_here, elsewhere[0]))
"""
  ran = _in_a_new_process(script)
  assert ran.returncode == 0 and ran.stdout.split() == ["True"], (ran.returncode, ran.stderr[-2000:])


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", [(8, 5, 6, 4), (12, 5)])
def test_batch_norm_by_onednn_is_the_reference_to_second_order(loaded, relu, shape):
  """layers.batch_norm through oneDNN's batch normalisation (the ReLU fused) against its reference pass (XLA's):
  outputs and statistics, gradients of x, scale and bias, and the gradient of a penalty on x's gradient (second
  order: oneDNN's passes differentiate as the reference ones); 2-D inputs as (M, 1, 1, C)."""
  from wgan_gp_jax.kernels import layers
  x = jax.random.normal(jax.random.key(0), shape) * 2 + 0.5
  scale, bias = jnp.linspace(0.5, 1.5, shape[-1]), jnp.linspace(-0.4, 0.3, shape[-1])
  weights = jax.random.normal(jax.random.key(1), shape)

  def derivatives(x, scale, bias):
    def loss(x, scale, bias):
      return jnp.sum(jnp.sin(layers.batch_norm(x, scale, bias, 1e-5, relu=relu)) * weights)
    penalty = lambda scale, bias: jnp.sum(jnp.square(jax.grad(loss)(x, scale, bias)))
    return (layers.batch_norm_with_statistics(x, scale, bias, 1e-5, relu=relu),
            jax.grad(loss, argnums=(0, 1, 2))(x, scale, bias), jax.grad(penalty, argnums=(0, 1))(scale, bias))

  program = jax.jit(derivatives).lower(x, scale, bias).as_text()
  assert "wgan_gp_jax_onednn_norm_forward" in program and "wgan_gp_jax_onednn_norm_backward" in program
  with onednn.off():
    jax.clear_caches()  # jit keeps what it traced
    reference_program = jax.jit(derivatives).lower(x, scale, bias)
  jax.clear_caches()
  assert "onednn_norm" not in reference_program.as_text()
  for actual, expected in zip(jax.tree.leaves(jax.jit(derivatives)(x, scale, bias)),
                              jax.tree.leaves(reference_program.compile()(x, scale, bias))):
    np.testing.assert_allclose(actual, expected, rtol=2e-5, atol=2e-5 * float(jnp.max(jnp.abs(expected))))
