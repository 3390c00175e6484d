"""The benchmark runs end to end and its PyTorch reference is the same function as the JAX model."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wgan_gp_jax import configuration, host, losses
from wgan_gp_jax import train as train_lib
from wgan_gp_jax.models import build_models

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _small_config(resolution: int = 16):
  return configuration.override(configuration.default_config("image"), {
      "data.resolution": resolution, "model.width": 8, "batch_size": 4, "model.latent_dim": 16})


_FAULTS_SCRIPT = """
import ctypes, resource, sys
from wgan_gp_jax import host
applied = host.keep_freed_memory() if sys.argv[1] == "keep" else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
size = 96 << 20  # above glibc's largest mmap threshold

def touch_and_free():
  buffer = libc.malloc(size)
  ctypes.memset(buffer, 1, size)
  libc.free(ctypes.c_void_p(buffer))

touch_and_free()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch_and_free()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_keep_freed_memory_reuses_large_buffers_without_page_faults():
  """Without the setting a freed 96 MiB buffer goes back to the kernel and faults in again when reallocated."""
  results = {}
  for mode in ("default", "keep"):
    output = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT, mode], cwd=REPO_ROOT, capture_output=True,
                            text=True, check=True).stdout.split()
    results[mode] = (output[0] == "True", int(output[1]))
  pages = (96 << 20) // 4096
  assert results["keep"][0]
  assert results["default"][1] > pages // 2
  assert results["keep"][1] < pages // 10


_DEVICES_SCRIPT = """
import json, os, sys
from wgan_gp_jax import host
count = host.one_device_per_core()
import jax
print(json.dumps([count, jax.device_count(), os.environ["XLA_FLAGS"]]))
"""


@pytest.mark.parametrize("preset", [None, "--xla_force_host_platform_device_count=3"])
def test_one_device_per_core_makes_single_threaded_cpu_devices_unless_a_count_is_set(preset):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  if preset:
    env["XLA_FLAGS"] = preset
  count, devices, flags = json.loads(subprocess.run(
    [sys.executable, "-c", _DEVICES_SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
    check=True).stdout.splitlines()[-1])
  expected = 3 if preset else len(os.sched_getaffinity(0))
  assert count == devices == expected
  assert ("--xla_cpu_multi_thread_eigen=false" in flags) == (preset is None)


def test_torch_reference_has_the_same_losses_and_gradients():
  torch = pytest.importorskip("torch")
  from benchmarks import torch_dcgan

  resolution = 16
  config = _small_config(resolution)
  models = build_models(config)
  state = train_lib.init_state(config, models)
  reference = torch_dcgan.WGANGP(resolution, 3, config.model.width, config.model.latent_dim)
  torch_dcgan.load_flax_params(reference.generator, reference.critic, state.generator_params,
                               state.generator_batch_stats, state.critic_params)
  real = jax.random.uniform(jax.random.key(0), (4, resolution, resolution, 3), jnp.float32, -1.0, 1.0)
  z = jax.random.normal(jax.random.key(1), (4, config.model.latent_dim), jnp.float32)
  key = jax.random.key(2)
  t = jax.random.uniform(key, (4, 1, 1, 1), jnp.float32)  # random_interpolates' coefficients

  def jax_side(state):
    fake, _ = train_lib.generate(models, state.generator_params, state.generator_batch_stats, z, train=True)
    critic_loss = lambda params: losses.wgan_gp_critic_loss(train_lib.critic_fn(models, params), real, fake, key)[0]
    loss, grads = jax.value_and_grad(critic_loss)(state.critic_params)
    scores = models.critic.apply({"params": state.critic_params}, fake)
    return fake, loss, grads, losses.wasserstein_generator_loss(scores)

  compiled = jax.jit(jax_side).lower(state).compile(compiler_options={"xla_backend_optimization_level": 0})
  fake, loss, grads, generator_loss = compiled(state)
  torch_fake = reference.generator(torch.from_numpy(np.array(z)))
  np.testing.assert_allclose(torch_fake.detach().permute(0, 2, 3, 1).numpy(), np.asarray(fake), atol=1e-5)
  torch_loss, _ = reference.critic_loss(torch_dcgan.to_torch_images(real), torch_fake.detach(),
                                        torch.from_numpy(np.array(t)))
  torch_loss.backward()
  np.testing.assert_allclose(float(torch_loss.detach()), float(loss), rtol=1e-5)
  # Critic gradients (through the penalty's double backward), in flax's layouts.
  for i, conv in enumerate(reference.critic.convs):
    np.testing.assert_allclose(conv.weight.grad.permute(2, 3, 1, 0).numpy(), grads[f"Conv_{i}"]["kernel"],
                               rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(reference.critic.dense.weight.grad.numpy().T, grads["Dense_0"]["kernel"],
                             rtol=1e-4, atol=1e-5)

  np.testing.assert_allclose(float(reference.generator_loss(torch.from_numpy(np.array(z)))), float(generator_loss),
                             rtol=1e-5, atol=1e-6)


def test_benchmark_writes_its_figures(tmp_path):
  out = tmp_path / "figures.json"
  command = [sys.executable, "-m", "experiments.benchmark", "--config", "experiments/configs/bench_dcgan32.py",
             "--config.data.resolution=8", "--config.model.width=4", "--config.batch_size=8", "--config.n_critic=2",
             "--steps=2", "--iterations=1", "--rounds=1", f"--json={out}"]
  try:
    import torch  # noqa: F401
    command.append("--compare=torch")
    with_torch = True
  except ImportError:
    with_torch = False
  # LLVM -O0: compiles quickly; this test checks what the benchmark reports, not how fast.
  env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"}
  completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=env)
  assert completed.returncode == 0, completed.stderr[-3000:]
  figures = json.loads(out.read_text())
  for kind, images in (("critic", 8), ("generator", 8), ("iteration", 3 * 8)):
    assert figures[f"{kind}_img_per_s"] == pytest.approx(images / figures[f"{kind}_seconds"])
    assert figures[f"{kind}_xla_flops"] > 0 and figures[f"{kind}_compile_seconds"] > 0
    assert 0 < figures[f"{kind}_fraction_of_peak"] < 10
    if with_torch:
      assert figures[f"torch_{kind}_img_per_s"] > 0
      torch_seconds = [figures[f"{name}_{kind}_seconds"] for name in ("torch", "torch_1thread") if
                       f"{name}_{kind}_seconds" in figures]
      assert figures[f"{kind}_speedup_over_torch"] == pytest.approx(min(torch_seconds) / figures[f"{kind}_seconds"])
  # The iteration does n_critic critic steps and one generator step.
  assert figures["iteration_xla_flops"] == pytest.approx(2 * figures["critic_xla_flops"] + figures["generator_xla_flops"])
  assert figures["machine"]["versions"]["jax"] == jax.__version__
  if with_torch:
    assert max(figures["loss_relative_differences"].values()) < 1e-4
    assert "jax / torch (faster thread setting) speed" in completed.stdout
