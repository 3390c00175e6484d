"""Times the compiled WGAN-GP steps and, with ``--compare torch``, the same steps in PyTorch in the same run.

  python -m experiments.benchmark --config experiments/configs/bench_dcgan64.py \\
      [--config.batch_size=512] [--compare torch] [--json results.json] [--steps 10] [--iterations 3]

After compilation it measures the median wall time of

* the critic step: one critic update (fakes from the generator, the loss on
  real and fake, the gradient penalty with its double backward, Adam), as in
  ``train.make_critic_update``;
* the generator step: the generator through the critic and one Adam update
  (``train.make_generator_update``);
* the iteration: ``train.compile_train_iteration``, ``n_critic`` critic steps
  and one generator step in one dispatch, state donated, data on the device;

and prints images per second (for the iteration: ``(n_critic + 1) * B`` per
iteration, so that it compares with the single steps), compile times, XLA's
memory footprint, the FLOPs XLA counts in each program (for the iteration
``n_critic`` critic steps plus a generator step: XLA counts a loop body once)
and the GFLOP/s they imply as a fraction of the float32 matmul peak measured in
the same run. Every framework's GFLOP/s is that one count over its own time: a
rate of the same function, not of each framework's arithmetic (on XLA:CPU the
convolutions that ``conv`` computes by Winograd count their products and
transforms, 2.5-4x fewer than a direct convolution's).

``--compare torch`` loads the same weights into ``benchmarks.torch_dcgan`` (the
fastest formulation of the same function in PyTorch), checks that both compute
the same losses, then times every PyTorch variant: eager and ``torch.compile``d
(``--torch_compile``; the critic's forward, double backward and parameter
gradients as one graph), each on all its threads and on one thread. The compiled
variants are first checked against eager on the same inputs (which also
compiles them, outside the timings); a step that does not compile runs eagerly
and the table and JSON say so (``torch_compile_outcome``). All are timed in
rounds interleaved with JAX's so that all see the same machine load (each
round's first call untimed), and the speed ratio is quoted against the fastest
PyTorch variant of each step (on a loaded machine one thread can beat two).
``--json FILE`` writes everything, with the machine, versions and load averages.
Without PyTorch, ``--compare torch`` exits with one line that says what to install.

On a GPU (JAX's default backend ``gpu``) PyTorch runs on CUDA, there are no thread variants, every timed call waits
for the device, and both frameworks compute in full float32 (no TF32: JAX's default matmul precision is set to
``highest``, PyTorch's TF32 switches off), the function the losses are checked on. ``benchmarks/gpu_benchmark.sh``
runs the GPU set (32 and 64 px, batch 64 and 512).

``--profile STEP`` times no framework: it lists where that compiled step spends its time, operation by operation of
XLA's program (``benchmarks/step_profile.py``).
"""

import json
import os
import platform
import resource
import statistics
import sys
import time
from typing import Any, Callable

from wgan_gp_jax.runner import host

host.keep_freed_memory()  # before JAX allocates anything

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from benchmarks import step_profile
from experiments import cli  # noqa: E402
from wgan_gp_jax import configuration, losses  # noqa: E402
from wgan_gp_jax.kernels import onednn
from wgan_gp_jax import train as train_lib  # noqa: E402
from wgan_gp_jax.models import Models, build_models  # noqa: E402

STEP_KINDS = ("critic", "generator", "iteration")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_COMPARE = flags.DEFINE_enum("compare", None, ["torch"], "Also time this framework's implementation.")
_JSON = flags.DEFINE_string("json", None, "Write the figures to this JSON file.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed critic and generator steps per framework.")
_ITERATIONS = flags.DEFINE_integer("iterations", 3, "Timed full iterations per framework.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Blocks the timed calls are split into, alternating frameworks.")
_PROFILE = flags.DEFINE_enum("profile", None, list(STEP_KINDS),
                              "Instead of timing the steps, profile this one over --steps calls: every operation of"
                              " XLA's program with its time (benchmarks/step_profile.py).")
_TORCH_COMPILE = flags.DEFINE_boolean("torch_compile", True, "With --compare torch, also time the torch.compile"
                                      " variants (compiling them takes a minute or more).")
flags.mark_flags_as_required(["config"])
TORCH_MISSING = "--compare torch needs PyTorch: pip install -r requirements-torch.txt"
COMPILED_TOLERANCE = 1e-2  # largest relative difference between a torch.compile'd step and eager that is timed


def import_torch_reference():
  """``(torch, benchmarks.torch_dcgan)``; without PyTorch, exits with one line naming the file to install from."""
  try:
    import torch  # optional dependency
  except ImportError:
    raise SystemExit(TORCH_MISSING) from None
  from benchmarks import torch_dcgan
  return torch, torch_dcgan


def on_gpu() -> bool:
  return jax.default_backend() == "gpu"


def torch_device() -> str:
  """Where PyTorch runs: on CUDA when JAX runs on a GPU, so that both use the same processor."""
  return "cuda" if on_gpu() else "cpu"


def _call_times(fn: Callable[[], Any], calls: int) -> list[float]:
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def matmul_peak_gflops(size: int = 2048, calls: int = 7) -> float:
  """The best float32 GFLOP/s of a ``size``-square matrix product on the default device."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
  matmul = jax.jit(jnp.dot)
  matmul(a, b).block_until_ready()
  best = min(_call_times(lambda: matmul(a, b).block_until_ready(), calls))
  return 2 * size**3 / best / 1e9


def _compiled_figures(compiled) -> dict[str, float]:
  """One device's memory."""
  memory = compiled.memory_analysis()
  if memory is None:
    return {}
  return {"xla_memory_bytes": float(memory.temp_size_in_bytes + memory.argument_size_in_bytes
                                    + memory.output_size_in_bytes - memory.alias_size_in_bytes),
          "xla_temp_bytes": float(memory.temp_size_in_bytes)}


def _products_flops(jitted, args, num_devices: int) -> float:
  """XLA's FLOP count of the whole program (one device's partition, times the devices) as conv's matrix products
  compute it: XLA counts nothing for oneDNN's custom calls, so the program is traced again with them off."""
  with onednn.off():
    jax.clear_caches()  # jit would reuse its trace with oneDNN's calls
    cost = jitted.lower(*args).cost_analysis()
  jax.clear_caches()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return num_devices * float(cost.get("flops", 0.0)) if cost else 0.0


class JaxSteps:
  """The three programs (or those of ``kinds``), compiled, with their state and device-resident data."""

  def __init__(self, config, models: Models, kinds: tuple[str, ...] = STEP_KINDS):
    self.config = config
    batch_size, n_critic = config.batch_size, config.n_critic
    mesh = train_lib.make_mesh(config.num_devices or None)
    parts = configuration.training_parts(config)
    initial_state = train_lib.init_state(models, parts.optimizers, seed=config.seed, ema=parts.ema is not None)
    self.state = jax.device_put(initial_state, train_lib.replicated(mesh))
    shape = (n_critic, batch_size) + models.sample_shape
    real = jax.random.uniform(jax.random.key(1), shape, jnp.float32, -1.0, 1.0)
    self.real = jax.device_put(real, train_lib.iteration_data_sharding(mesh))
    self.real_batch = self.real[0]
    batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    critic_update = train_lib.make_critic_update(models, parts.objective, parts.optimizers.critic,
                                                 augmentation=parts.augmentation, batch_sharding=batch_sharding)
    generator_update = train_lib.make_generator_update(models, parts.objective, parts.optimizers.generator,
                                                       augmentation=parts.augmentation, ema=parts.ema,
                                                       batch_sharding=batch_sharding)

    def critic_step(state, real_batch, key):
      critic_params, critic_opt_state, metrics = critic_update(
          state, state.critic_params, state.critic_opt_state, real_batch, key)
      return state.replace(critic_params=critic_params, critic_opt_state=critic_opt_state), metrics

    def generator_step(state, key):
      return generator_update(state, key, batch_size)

    key = jax.random.key(2)
    self.compile_seconds, self.figures, self.compiled = {}, {}, {}
    programs = {
        "critic": (jax.jit(critic_step, donate_argnums=0), (self.state, self.real_batch, key)),
        "generator": (jax.jit(generator_step, donate_argnums=0), (self.state, key)),
        "iteration": (train_lib.compile_train_iteration(models, parts.objective, parts.optimizers, mesh,
                                                        n_critic=n_critic, augmentation=parts.augmentation,
                                                        ema=parts.ema), (self.state, self.real)),
    }
    for name in kinds:
      jitted, args = programs[name]
      start = time.perf_counter()
      self.compiled[name] = jitted.lower(*args).compile()
      self.compile_seconds[name] = time.perf_counter() - start
      self.figures[name] = {"flops": _products_flops(jitted, args, mesh.size), **_compiled_figures(self.compiled[name])}
    if set(kinds) == set(STEP_KINDS):
      # XLA's cost analysis counts a loop body once: the iteration runs the critic's n_critic times.
      self.figures["iteration"]["flops"] = (
          n_critic * self.figures["critic"]["flops"] + self.figures["generator"]["flops"])
    self._key = key

  def run(self, name: str) -> None:
    """One call of a program; its state output feeds the next call (the input was donated)."""
    self._key, key = jax.random.split(self._key)
    if name == "critic":
      self.state, metrics = self.compiled["critic"](self.state, self.real_batch, key)
    elif name == "generator":
      self.state, metrics = self.compiled["generator"](self.state, key)
    else:
      self.state, metrics = self.compiled["iteration"](self.state, self.real)
    jax.block_until_ready((self.state, metrics))


class TorchSteps:
  """``benchmarks.torch_dcgan`` with the JAX state's weights, on the same data, on ``threads`` threads.

  ``compiled``: the steps under ``torch.compile`` (``WGANGP``'s ``compiled=True``) rather than eager.
  """

  def __init__(self, config, jax_steps: JaxSteps, threads: int, compiled: bool = False):
    torch, torch_dcgan = import_torch_reference()

    optimizer = {key: config.critic[key] for key in ("name", "learning_rate", "b1", "b2", "linear_decay")}
    if (config.model.name != "dcgan" or config.model.layer_norm or config.objective.name != "wgan_gp"
        or config.objective.drift_weight or config.ema.enabled or config.augment.policy
        or optimizer != {key: config.generator[key] for key in optimizer}
        or optimizer["name"] != "adam" or optimizer["linear_decay"]):
      raise app.UsageError("--compare torch implements WGAN-GP with the DCGAN critic without layer norm, no EMA, no"
                           " augmentation, and one constant-rate Adam for both networks only.")
    self.torch_dcgan = torch_dcgan
    self.model = torch_dcgan.WGANGP(config.data.resolution, config.data.channels, config.model.width,
                                    config.model.latent_dim, gp_weight=config.objective.gp_weight,
                                    learning_rate=optimizer["learning_rate"], b1=optimizer["b1"], b2=optimizer["b2"],
                                    device=torch_device())
    state = jax.device_get(jax_steps.state)
    torch_dcgan.load_flax_params(self.model.generator, self.model.critic, state.generator_params,
                                 state.generator_batch_stats, state.critic_params)
    if self.model.device.type == "cuda":  # float32 products, as JAX's at precision "highest"
      torch.backends.cuda.matmul.allow_tf32 = False
      torch.backends.cudnn.allow_tf32 = False
    self.real = [torch_dcgan.to_torch_images(batch).to(self.model.device) for batch in np.asarray(jax_steps.real)]
    self.batch_size = config.batch_size
    self.threads = threads
    self.compiled = compiled
    self._torch = torch

  def variant(self, threads: int, compiled: bool) -> "TorchSteps":
    """The same model and data, run on another number of threads, eager or compiled."""
    other = object.__new__(TorchSteps)
    other.__dict__.update(self.__dict__, threads=threads, compiled=compiled)
    return other

  def describe(self) -> dict[str, Any]:
    return {"compiled": self.compiled, "threads": self.threads, "device": str(self.model.device)}

  def run(self, name: str) -> None:
    self._torch.set_num_threads(self.threads)
    if name == "critic":
      self.model.critic_update(self.real[0], compiled=self.compiled)
    elif name == "generator":
      self.model.generator_update(self.batch_size, compiled=self.compiled)
    else:
      self.model.iteration(self.real, compiled=self.compiled)
    if self.model.device.type == "cuda":
      self._torch.cuda.synchronize()

  def compile_and_compare(self) -> dict[str, Any]:
    """Compiles this variant's two gradient functions (their first calls) and compares them with eager.

    Same weights and inputs; the generator's batch-norm statistics are put back
    between the calls. Returns, per step, the seconds of the first compiled call,
    how it ran (``compiled`` or why it fell back to eager) and the largest
    difference from eager (``largest_relative_difference``: the loss, and the gradients on their common scale).
    """
    torch = self._torch
    torch.set_num_threads(self.threads)
    model = self.model
    generator = torch.Generator().manual_seed(5)
    z = torch.randn(self.batch_size, model.latent_dim, generator=generator).to(model.device)
    t = torch.rand(self.batch_size, 1, 1, 1, generator=generator).to(model.device)
    inputs = {"critic": (self.real[0], z, t), "generator": (z,)}
    report = {}
    for name, args in inputs.items():
      buffers = {key: value.clone() for key, value in model.generator.state_dict().items()}
      eager_loss, eager_grads = model.gradient_function(name, compiled=False)(*args)
      model.generator.load_state_dict(buffers)
      start = time.perf_counter()
      compiled_fn = model.gradient_function(name, compiled=True)
      loss, grads = compiled_fn(*args)
      seconds = time.perf_counter() - start
      model.generator.load_state_dict(buffers)
      difference = max(self.torch_dcgan.largest_relative_difference([loss], [eager_loss]),
                       self.torch_dcgan.largest_relative_difference(grads, eager_grads))
      report[name] = {"first_call_seconds": seconds, "outcome": compiled_fn.outcome,
                      "max_relative_difference_from_eager": difference}
    return report


def check_same_losses(config, models: Models, jax_steps: JaxSteps, torch_steps: TorchSteps) -> dict[str, float]:
  """Critic loss, penalty and generator loss of both implementations (PyTorch eager), same weights and inputs."""
  torch, _ = import_torch_reference()

  state = jax_steps.state
  real = jax_steps.real[0]
  z = jax.random.normal(jax.random.key(3), (config.batch_size, config.model.latent_dim), jnp.float32)
  penalty_key = jax.random.key(4)
  fake, _ = train_lib.generate(models, state.generator_params, state.generator_batch_stats, z, train=True)
  critic_loss, metrics = losses.wgan_gp_critic_loss(
      train_lib.critic_fn(models, state.critic_params), real, fake, penalty_key, gp_weight=config.objective.gp_weight)
  generator_loss = losses.wasserstein_generator_loss(models.critic.apply({"params": state.critic_params}, fake))
  # random_interpolates' coefficients, drawn the same way.
  t = jax.random.uniform(penalty_key, (config.batch_size,) + (1,) * len(models.sample_shape), jnp.float32)

  model = torch_steps.model
  torch_z = torch.from_numpy(np.array(z)).to(model.device)
  torch_fake = model.generator(torch_z).detach()
  torch_critic_loss, torch_metrics = model.critic_loss(
      torch_steps.real[0], torch_fake, torch.from_numpy(np.array(t)).permute(0, 3, 1, 2).to(model.device))
  torch_generator_loss = model.generator_loss(torch_z)
  pairs = {
      "critic_loss": (critic_loss, torch_critic_loss),
      "gradient_penalty": (metrics["gradient_penalty"], torch_metrics["gradient_penalty"]),
      "generator_loss": (generator_loss, torch_generator_loss),
  }
  differences = {}
  for name, (jax_value, torch_value) in pairs.items():
    jax_value, torch_value = float(jax_value), float(torch_value.detach())
    differences[name] = abs(jax_value - torch_value) / max(abs(jax_value), 1e-3)
    print(f"  {name:18s} jax {jax_value:+.6f}  torch {torch_value:+.6f}  relative difference {differences[name]:.1e}")
  if max(differences.values()) > 1e-4:
    raise SystemExit("JAX and PyTorch disagree on the losses from the same weights: not comparing their speed.")
  return differences


def _machine() -> dict[str, Any]:
  versions = {"python": platform.python_version()}
  for package in ("jax", "jaxlib", "flax", "optax", "numpy", "torch"):
    module = sys.modules.get(package)
    if module is not None:
      versions[package] = getattr(module, "__version__", "?")
  return {"cpu": host.cpu_info(), "platform": platform.platform(),
          "devices": [str(device) for device in jax.devices()], "device_kind": jax.devices()[0].device_kind,
          "default_matmul_precision": str(jax.config.jax_default_matmul_precision), "versions": versions,
          "xla_flags": os.environ.get("XLA_FLAGS", ""), "onednn_convolutions": onednn.version()}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _PROFILE.value and _COMPARE.value:
    raise app.UsageError("--profile profiles the JAX step alone; drop --compare")
  if _PROFILE.value and _STEPS.value < 1:
    raise app.UsageError(f"--profile needs --steps of at least 1, got {_STEPS.value}")
  config = _CONFIG.value
  if _COMPARE.value == "torch" and config.model.dtype != "float32":
    raise app.UsageError("--compare torch times the float32 models; drop --config.model.dtype")
  if _COMPARE.value == "torch":
    import_torch_reference()  # before anything slow: without PyTorch, one line and exit
  if _PROFILE.value:
    steps = JaxSteps(config, build_models(config), kinds=(_PROFILE.value,))
    result = {"config": config.to_dict(), **step_profile.profile(steps, _PROFILE.value, _STEPS.value)}
    step_profile.print_profile(result, config, top=30)
    _write_json(result)
    return
  if on_gpu():
    jax.config.update("jax_default_matmul_precision", "highest")  # float32 as PyTorch's (TF32 off in TorchSteps)
  models = build_models(config)
  batch_size, n_critic = config.batch_size, config.n_critic
  images = {"critic": batch_size, "generator": batch_size, "iteration": (n_critic + 1) * batch_size}
  results: dict[str, Any] = {"config": config.to_dict(), "load_average_start": os.getloadavg()}
  resolution = config.data.resolution
  print(f"{config.model.name} {resolution}x{resolution} width {config.model.width}, batch {batch_size}, "
        f"n_critic {n_critic}, {config.model.dtype}, on {jax.devices()[0].platform} (load average"
        f" {os.getloadavg()[0]:.2f})")
  if jax.default_backend() == "cpu":
    release = onednn.version()
    print(f"convolutions: {f'oneDNN {release} and Winograd' if release else 'matrix products (oneDNN off)'}")

  peaks = [matmul_peak_gflops()]
  jax_steps = JaxSteps(config, models)
  results["jax_max_rss_bytes_after_compile"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  frameworks = {"jax": jax_steps}
  if _COMPARE.value == "torch":
    torch, _ = import_torch_reference()

    print("same weights, same inputs:")
    threads = torch.get_num_threads()
    frameworks["torch"] = TorchSteps(config, jax_steps, threads)
    results["loss_relative_differences"] = check_same_losses(config, models, jax_steps, frameworks["torch"])
    # On a loaded machine OpenMP's static split waits for its slowest thread, and PyTorch on one
    # thread can beat PyTorch on all: every variant runs on both, and the comparison is with the fastest.
    one_thread_too = threads > 1 and not on_gpu()  # the host's threads matter on the CPU only
    thread_settings = [("", threads)] + ([("_1thread", 1)] if one_thread_too else [])
    if one_thread_too:
      frameworks["torch_1thread"] = frameworks["torch"].variant(1, compiled=False)
    if _TORCH_COMPILE.value:
      results["torch_compile"] = {}
      for suffix, variant_threads in thread_settings:
        name = f"torch_compiled{suffix}"
        print(f"{name}: compiling (torch.compile, {variant_threads} thread{'s' * (variant_threads > 1)}) and"
              " comparing with eager:")
        variant = frameworks["torch"].variant(variant_threads, compiled=True)
        report = variant.compile_and_compare()
        results["torch_compile"][name] = report
        for step, figures in report.items():
          print(f"  {step:10s} {figures['outcome']}, first call {figures['first_call_seconds']:.1f} s, largest"
                f" relative difference from eager {figures['max_relative_difference_from_eager']:.1e}")
        if all(figures["outcome"] != "compiled" for figures in report.values()):
          print(f"  {name}: nothing compiled, not timed (it would be eager again)")
          continue
        # Inductor sums in another order: through the penalty's double backward the critic's gradients move by up to
        # ~3e-4 of the largest one at 32x32 and 2.8e-3 at 64x64 on two threads (Intel Xeons, 2026-12-01/02): rounding, not
        # another function (a wrong sign or a missing term moves them by O(1)); the test checks parameters after Adam.
        if max(figures["max_relative_difference_from_eager"] for figures in report.values()) > COMPILED_TOLERANCE:
          print(f"  {name} disagrees with PyTorch eager on the same inputs: not timed")
          continue
        frameworks[name] = variant
      results["torch_compile_outcome"] = frameworks["torch"].model.compile_outcome
    results["torch_threads"] = threads
    results["torch_variants"] = {name: steps.describe() for name, steps in frameworks.items() if name != "jax"}

  times: dict[str, dict[str, list[float]]] = {framework: {kind: [] for kind in STEP_KINDS} for framework in frameworks}
  for kind in STEP_KINDS:
    calls = _ITERATIONS.value if kind == "iteration" else _STEPS.value
    for block in range(_ROUNDS.value):
      block_calls = calls // _ROUNDS.value + (block < calls % _ROUNDS.value)
      if not block_calls:
        continue
      for framework, steps in frameworks.items():
        # Untimed: the very first call allocates and creates oneDNN primitives, and the first after another
        # framework's block finds cold caches and sleeping thread pools (JAX's 32x32 generator step ran 5-15%
        # slower in it, Intel Xeon, 2026-12-02); training runs one framework.
        steps.run(kind)
        times[framework][kind] += _call_times(lambda: steps.run(kind), block_calls)
  peaks.append(matmul_peak_gflops())
  peak = max(peaks)
  results.update(machine=_machine(), load_average_end=os.getloadavg(), matmul_peak_gflops=peak,
                 matmul_peak_measurements_gflops=peaks, max_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)

  print(f"float32 matmul peak measured: {peak:.1f} GFLOP/s (measurements {', '.join(f'{p:.1f}' for p in peaks)})")
  header = f"{'step':10s} {'framework':22s} {'median s':>9s} {'img/s':>8s} {'GFLOP/s':>8s} {'of peak':>8s}"
  print(header)
  for kind in STEP_KINDS:
    figures = jax_steps.figures[kind]
    for framework in frameworks:
      seconds = statistics.median(times[framework][kind])
      img_per_s = images[kind] / seconds
      gflops = figures["flops"] / seconds / 1e9
      prefix = "" if framework == "jax" else f"{framework}_"
      results[f"{prefix}{kind}_seconds"] = seconds
      results[f"{prefix}{kind}_img_per_s"] = img_per_s
      results[f"{prefix}{kind}_times"] = times[framework][kind]
      if framework == "jax":
        results[f"{kind}_gflops"] = gflops
        results[f"{kind}_fraction_of_peak"] = gflops / peak
      print(f"{kind:10s} {framework:22s} {seconds:9.4f} {img_per_s:8.1f} {gflops:8.1f} {gflops / peak:8.1%}")
    if "torch" in frameworks:
      fastest = min((framework for framework in frameworks if framework != "jax"),
                    key=lambda framework: results[f"{framework}_{kind}_seconds"])
      torch_seconds = results[f"{fastest}_{kind}_seconds"]
      ratio = torch_seconds / results[f"{kind}_seconds"]
      results[f"torch_best_{kind}_img_per_s"] = images[kind] / torch_seconds
      results[f"torch_best_{kind}_variant"] = fastest
      results[f"{kind}_speedup_over_torch"] = ratio
      print(f"{kind:10s} jax / fastest torch ({fastest}) speed: {ratio:.2f}x")
  for kind in STEP_KINDS:
    figures = jax_steps.figures[kind]
    results[f"{kind}_compile_seconds"] = jax_steps.compile_seconds[kind]
    results[f"{kind}_xla_flops"] = figures["flops"]
    results[f"{kind}_xla_memory_bytes"] = figures.get("xla_memory_bytes")
    memory = figures.get("xla_memory_bytes")
    print(f"{kind:10s} compile {jax_steps.compile_seconds[kind]:6.1f} s, XLA FLOPs {figures['flops'] / 1e9:7.1f} G, "
          f"XLA memory {memory / 2**20 if memory else float('nan'):7.1f} MiB")
  print(f"process peak RSS {results['max_rss_bytes'] / 2**20:.0f} MiB "
        f"(JAX alone, after compiling: {results['jax_max_rss_bytes_after_compile'] / 2**20:.0f} MiB); "
        f"load average {results['load_average_start'][0]:.2f} -> {results['load_average_end'][0]:.2f}")
  _write_json(results)


def _write_json(results: dict[str, Any]) -> None:
  if _JSON.value:
    with open(_JSON.value, "w") as file:
      json.dump(results, file, indent=1)


if __name__ == "__main__":
  cli.run(main)
