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

from benchmarks import step_profile
from wgan_gp_jax import configuration, losses
from wgan_gp_jax.kernels import onednn
from wgan_gp_jax.runner import host
from wgan_gp_jax import train as train_lib
from wgan_gp_jax.models import build_models

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _small_config(resolution: int = 16, width: int = 8):
  return configuration.override(configuration.default_config("image"), {
      "data.resolution": resolution, "model.width": width, "batch_size": 4, "model.latent_dim": 16})


_FAULTS_SCRIPT = """
import ctypes, resource, sys
from wgan_gp_jax.runner import host
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
from wgan_gp_jax.runner import host
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


@pytest.mark.parametrize("resolution", [32, 64])
def test_torch_reference_is_the_same_function_as_the_jax_models(resolution, import_or_missing):
  """Scores, images, losses, penalty and the critic's gradients (through the double backward) agree to f32 rounding.

  The PyTorch formulation stores pixels reversed so that XLA's asymmetric 'SAME'
  padding becomes PyTorch's symmetric ``padding=`` (``benchmarks/torch_dcgan.py``):
  fed images in their usual order, or with the padding on the wrong side, the
  same networks compute another function, which the last checks confirm.
  """
  torch = import_or_missing("torch", "the PyTorch reference step")
  from benchmarks import torch_dcgan

  config = _small_config(resolution, width=4)
  batch, latent_dim = config.batch_size, config.model.latent_dim
  models = build_models(config)

  def initial_variables(key):
    generator_key, critic_key, noise_key = jax.random.split(key, 3)
    generator = models.generator.init(generator_key, jnp.zeros((1, latent_dim)), train=False)
    critic = models.critic.init(critic_key, jnp.zeros((1, resolution, resolution, 3)))
    # Biases are initialised to zero: make them count.
    leaves, tree = jax.tree.flatten((generator["params"], critic["params"]))
    noisy = [leaf + 0.05 * jax.random.normal(k, leaf.shape) for leaf, k in
             zip(leaves, jax.random.split(noise_key, len(leaves)))]
    return (*jax.tree.unflatten(tree, noisy), generator["batch_stats"])

  # Jitted at -O0: flax's eager initialisation dispatches op by op and takes far longer.
  generator_params, critic_params, batch_stats = jax.jit(initial_variables).lower(jax.random.key(7)).compile(
      compiler_options={"xla_backend_optimization_level": 0})(jax.random.key(7))
  reference = torch_dcgan.WGANGP(resolution, 3, config.model.width, latent_dim)
  torch_dcgan.load_flax_params(reference.generator, reference.critic, generator_params, batch_stats, critic_params)
  real = jax.random.uniform(jax.random.key(0), (batch, resolution, resolution, 3), jnp.float32, -1.0, 1.0)
  z = jax.random.normal(jax.random.key(1), (batch, latent_dim), jnp.float32)
  key = jax.random.key(2)
  t = jax.random.uniform(key, (batch, 1, 1, 1), jnp.float32)  # random_interpolates' coefficients

  def jax_side(critic_params, generator_params):
    fake, _ = train_lib.generate(models, generator_params, batch_stats, z, train=True)
    critic_loss = lambda params: losses.wgan_gp_critic_loss(train_lib.critic_fn(models, params), real, fake, key)
    (loss, metrics), grads = jax.value_and_grad(critic_loss, has_aux=True)(critic_params)
    scores = models.critic.apply({"params": critic_params}, jnp.concatenate([real, fake]))
    return fake, scores, loss, metrics["gradient_penalty"], grads, losses.wasserstein_generator_loss(scores[batch:])

  compiled = jax.jit(jax_side).lower(critic_params, generator_params).compile(
      compiler_options={"xla_backend_optimization_level": 0})
  fake, scores, loss, penalty, grads, generator_loss = compiled(critic_params, generator_params)

  torch_z = torch.from_numpy(np.array(z))
  torch_real = torch_dcgan.to_torch_images(real)
  # PyTorch's first generator call in a process now and then (1 process in 10 on an Intel Xeon, always the same other
  # result) rounds differently: 5e-5 after three batch norms of 4-16 channels, where every later call agrees with JAX
  # to 6e-7. The compared calls are not the first (batch statistics in training mode: the warm-up changes nothing).
  reference.critic(torch.cat([torch_real, reference.generator(torch_z)]))
  torch_fake = reference.generator(torch_z).detach()
  np.testing.assert_allclose(torch_dcgan.from_torch_images(torch_fake), np.asarray(fake), rtol=1e-5, atol=1e-6)
  torch_scores = reference.critic(torch.cat([torch_real, torch_fake])).detach().numpy()
  np.testing.assert_allclose(torch_scores, np.asarray(scores), rtol=1e-5, atol=1e-6)
  torch_loss, torch_metrics = reference.critic_loss(torch_real, torch_fake, torch.from_numpy(np.array(t)))
  np.testing.assert_allclose(float(torch_loss.detach()), float(loss), rtol=1e-5)
  np.testing.assert_allclose(float(torch_metrics["gradient_penalty"]), float(penalty), rtol=1e-5)
  torch_loss.backward()
  torch_grads = torch_dcgan.critic_grads_as_flax(reference.critic)
  assert set(torch_grads) == set(grads)
  for layer, layer_grads in grads.items():
    for name, grad in layer_grads.items():
      np.testing.assert_allclose(torch_grads[layer][name], np.asarray(grad), rtol=1e-4,
                                 atol=1e-5 * float(np.abs(grad).max()), err_msg=f"{layer}/{name}")
  # The generator step's loss, and its gradients' path (the critic's parameters get none).
  reference.critic.zero_grad(set_to_none=True)
  generator_loss_value, generator_grads = reference.generator_gradients(torch_z)
  np.testing.assert_allclose(float(generator_loss_value), float(generator_loss), rtol=1e-5, atol=1e-6)
  assert len(generator_grads) == len(list(reference.generator.parameters()))
  assert all(parameter.grad is None for parameter in reference.critic.parameters())

  # The checks can fail: images in their usual order, or the padding on the other side, change the function.
  natural_order = torch.from_numpy(np.array(real)).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
  assert not np.allclose(reference.critic(natural_order).detach().numpy(), np.asarray(scores[:batch]), atol=1e-3)
  functional = torch.nn.functional
  with torch.no_grad():
    x = torch_real
    for conv in reference.critic.convs:  # padding (1, 2): right for images in their usual order, wrong here
      x = functional.conv2d(functional.pad(x, (1, 2, 1, 2)), conv.weight, conv.bias, stride=2)
      x = functional.leaky_relu(x, 0.2)
    moved = reference.critic.dense(x.permute(0, 2, 3, 1).reshape(batch, -1))[:, 0].numpy()
  assert not np.allclose(moved, np.asarray(scores[:batch]), atol=1e-3)


def test_relative_difference_ignores_rounding_noise_of_zero_gradients_but_not_real_differences(import_or_missing):
  torch = import_or_missing("torch", "the PyTorch reference step")
  from benchmarks import torch_dcgan

  reference = [torch.tensor([2.0, -4.0]), torch.tensor([1e-9, -2e-9])]  # the second is zero in exact arithmetic
  noisy_zero = [torch.tensor([2.0, -4.0]), torch.tensor([-3e-9, 1e-9])]
  assert torch_dcgan.largest_relative_difference(noisy_zero, reference) < 1e-5  # under the 1e-3 the benchmark allows
  one_percent_off = [torch.tensor([2.0, -4.04]), torch.tensor([1e-9, -2e-9])]
  assert torch_dcgan.largest_relative_difference(one_percent_off, reference) == pytest.approx(0.01)
  small_but_wrong = [torch.tensor([2.0, -4.0]), torch.tensor([0.5, -0.2])]  # 1/8 of the largest, entirely wrong
  assert torch_dcgan.largest_relative_difference(small_but_wrong, [torch.tensor([2.0, -4.0]), torch.tensor([0.0, 0.0])]) > 0.1


def test_compiled_torch_steps_equal_eager(import_or_missing):
  """``torch.compile`` compiles both steps, the critic's with its double backward, and they compute what eager does."""
  torch = import_or_missing("torch", "the PyTorch reference step")
  from benchmarks import torch_dcgan

  resolution, width, batch, latent_dim = 8, 4, 2, 8
  models = {mode: torch_dcgan.WGANGP(resolution, 3, width, latent_dim) for mode in ("eager", "compiled")}
  models["compiled"].generator.load_state_dict(models["eager"].generator.state_dict())
  models["compiled"].critic.load_state_dict(models["eager"].critic.state_dict())
  real = torch_dcgan.to_torch_images(np.random.default_rng(0).uniform(-1, 1, (batch, resolution, resolution, 3)))
  losses_by_mode = {}
  for mode, model in models.items():
    torch.manual_seed(0)  # the same fakes and interpolation coefficients
    losses_by_mode[mode] = [float(model.critic_update(real, compiled=mode == "compiled")),
                            float(model.generator_update(batch, compiled=mode == "compiled")),
                            float(model.critic_update(real, compiled=mode == "compiled"))]
  threads = torch.get_num_threads()
  assert models["compiled"].compile_outcome == {f"critic_{threads}_threads": "compiled",
                                                f"generator_{threads}_threads": "compiled"}
  np.testing.assert_allclose(losses_by_mode["compiled"], losses_by_mode["eager"], rtol=1e-5)
  # After two Adam steps of each network the parameters still agree.
  for network in ("generator", "critic"):
    eager_state = getattr(models["eager"], network).state_dict()
    for name, value in getattr(models["compiled"], network).state_dict().items():
      np.testing.assert_allclose(value.numpy(), eager_state[name].numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


_WITHOUT_TORCH_SCRIPT = """
import runpy, sys
sys.modules["torch"] = None  # as if PyTorch were not installed
sys.argv = ["benchmark", "--config", "experiments/configs/bench_dcgan32.py", "--compare", "torch"]
runpy.run_module("experiments.benchmark", run_name="__main__")
"""


def test_compare_torch_without_torch_says_what_to_install():
  completed = subprocess.run([sys.executable, "-c", _WITHOUT_TORCH_SCRIPT], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=300)
  assert completed.returncode == 1
  assert "Traceback" not in completed.stderr
  assert completed.stderr.strip().splitlines()[-1] == (
      "--compare torch needs PyTorch: pip install -r requirements-torch.txt")
  assert "requirements-torch.txt" in completed.stderr and completed.stdout == ""


def test_benchmark_writes_its_figures(tmp_path):
  out = tmp_path / "figures.json"
  command = [sys.executable, "-m", "experiments.benchmark", "--config", "experiments/configs/bench_dcgan32.py",
             "--config.data.resolution=8", "--config.model.width=4", "--config.batch_size=8", "--config.n_critic=2",
             "--steps=2", "--iterations=1", "--rounds=1", f"--json={out}"]
  try:
    import torch  # noqa: F401
    command += ["--compare=torch", "--notorch_compile"]
    with_torch = True
  except ImportError:
    with_torch = False
  # LLVM at -O0 (the suite's XLA_FLAGS, tests/conftest.py): this test checks what the benchmark reports, not how fast.
  completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
  assert completed.returncode == 0, completed.stderr[-3000:]
  figures = json.loads(out.read_text())
  for kind, images in (("critic", 8), ("generator", 8), ("iteration", 3 * 8)):
    assert figures[f"{kind}_img_per_s"] == pytest.approx(images / figures[f"{kind}_seconds"])
    assert figures[f"{kind}_xla_flops"] > 0 and figures[f"{kind}_compile_seconds"] > 0
    assert 0 < figures[f"{kind}_fraction_of_peak"] < 10
    if with_torch:
      assert figures[f"torch_{kind}_img_per_s"] > 0
      torch_seconds = {name: figures[f"{name}_{kind}_seconds"] for name in figures["torch_variants"]}
      fastest = min(torch_seconds.values())
      assert figures[f"{kind}_speedup_over_torch"] == pytest.approx(fastest / figures[f"{kind}_seconds"])
      assert figures[f"torch_best_{kind}_variant"] == min(torch_seconds, key=torch_seconds.get)
      assert figures[f"torch_best_{kind}_img_per_s"] == pytest.approx(images / fastest)
  # The iteration does n_critic critic steps and one generator step.
  assert figures["iteration_xla_flops"] == pytest.approx(2 * figures["critic_xla_flops"] + figures["generator_xla_flops"])
  assert figures["machine"]["versions"]["jax"] == jax.__version__
  cpu = figures["machine"]["cpu"]
  assert cpu["model"] == host.cpu_model() and cpu["cores"] >= 1
  if sys.platform.startswith("linux") and cpu["machine"] == "x86_64":  # the ISA flags decide the kernels used
    assert cpu["family"] and "sse2" in cpu["flags"]
  if with_torch:
    assert max(figures["loss_relative_differences"].values()) < 1e-4
    assert "jax / fastest torch (" in completed.stdout
    # Eager on all threads and on one (the compiled variants cost a minute of Inductor's C++ compilation: they are
    # checked in test_compiled_torch_steps_equal_eager).
    threads = figures["torch_threads"]
    expected = {"torch": {"compiled": False, "threads": threads, "device": "cpu"}}
    if threads > 1:
      expected.update(torch_1thread={"compiled": False, "threads": 1, "device": "cpu"})
    assert figures["torch_variants"] == expected and "torch_compile" not in figures


def test_profile_times_every_operation_of_the_step_and_sorts_them_by_kind(tmp_path):
  out = tmp_path / "profile.json"
  command = [sys.executable, "-m", "experiments.benchmark", "--config", "experiments/configs/bench_dcgan32.py",
             "--config.data.resolution=8", "--config.model.width=4", "--config.batch_size=8", "--profile=critic",
             "--steps=2", f"--json={out}"]
  completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
  assert completed.returncode == 0, completed.stderr[-3000:]
  profile = json.loads(out.read_text())
  operations = profile["operations"]
  assert profile["cpu"]["model"] == host.cpu_model() and profile["wall_ms_per_call"] > 0
  assert sum(operation["share"] for operation in operations) == pytest.approx(1.0)
  assert sum(profile["kinds_ms_per_call"].values()) == pytest.approx(profile["operations_ms_per_call"])
  times = [operation["ms_per_call"] for operation in operations]
  assert times == sorted(times, reverse=True) and times[-1] >= 0
  # The critic's convolutions are oneDNN's where it is on (its input gradient into the image too, in sub-pixel form),
  # else products of im2col and col2im patch matrices; its dense layer is a product: each kind was executed.
  with_onednn = onednn.enabled(jnp.float32)
  convolution_kind = "oneDNN" if with_onednn else "products"
  assert any("Conv_0" in operation["source"] for operation in operations if operation["kind"] == convolution_kind)
  assert any("Dense_0" in operation["source"] for operation in operations if operation["kind"] == "products")
  assert (profile["kinds_ms_per_call"]["oneDNN"] > 0) == with_onednn
  assert with_onednn or profile["kinds_ms_per_call"]["patches"] > 0
  assert all(operation["kind"] != "products" or "dot" in operation["source"] or "conv" in operation["source"].lower()
             for operation in operations if operation["source"])
  lines = completed.stdout.strip().splitlines()
  assert lines[0].startswith("critic step, dcgan 8x8 width 4, batch 8, float32;") and profile["calls"] == 2
  assert len(lines) == 2 + len(step_profile.KINDS) + 1 + min(30, len(operations))


@pytest.mark.parametrize("flags, message", [
    (["--profile=critic", "--steps=0"], "--profile needs --steps of at least 1, got 0"),
    (["--profile=critic", "--compare=torch"], "--profile profiles the JAX step alone; drop --compare"),
    (["--compare=torch", "--config.model.dtype=bfloat16"],
     "--compare torch times the float32 models; drop --config.model.dtype"),
    (["--config.model.widht=8"],
     "--config.model.widht: unknown config key 'model.widht'; did you mean 'model.width'?"),
])
def test_benchmark_mistakes_are_one_line_and_exit_status_2(flags, message):
  completed = subprocess.run([sys.executable, "-m", "experiments.benchmark", "--config",
                              "experiments/configs/bench_dcgan32.py", *flags], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=300)
  assert completed.returncode == 2 and completed.stdout == ""
  assert completed.stderr.strip().splitlines() == [f"error: {message}"]
