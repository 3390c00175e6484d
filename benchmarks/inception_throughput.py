"""Images per second of FID Inception feature extraction on this machine, in each process setting.

  python -m benchmarks.inception_throughput [--images 480] [--batch_size 16] [--resolution 32] [--json FILE]

Each setting runs in its own process (XLA's flags are per process), one after another, on the same
random uint8 images; after a warm-up call (compilation, once per device) it times
``inception.inception_features`` and records the float32 matmul peak measured just before.

* ``one_device_per_core``: ``host.one_device_per_core()``, batches round-robin over single-threaded
  CPU devices, as ``experiments.evaluate`` runs;
* ``one_device``: JAX's default, one CPU device whose matrix products use every core;
* ``one_device_native_convs``: as ``one_device`` with XLA's own convolutions (``kernels="xla"``) instead of
  Winograd/matrix-product ones, to show what those bring.

Prints one JSON line per setting and, with ``--json``, writes all of them with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

_CHILD = """
import json, os, sys, time
mode, images, batch, resolution = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
from wgan_gp_jax.runner import host
host.keep_freed_memory()
if mode == "one_device_per_core":
  host.one_device_per_core()
import jax, jax.numpy as jnp, numpy as np
from wgan_gp_jax.metrics import inception
kernels = "xla" if mode == "one_device_native_convs" else "auto"
a = jnp.ones((2048, 2048), jnp.float32)
matmul = jax.jit(lambda a: a @ a)
matmul(a).block_until_ready()
peak = 0.0
for _ in range(5):
  start = time.perf_counter(); matmul(a).block_until_ready()
  peak = max(peak, 2 * 2048**3 / (time.perf_counter() - start) / 1e9)
params = inception.load_inception()
x = np.random.default_rng(0).integers(0, 256, (images, resolution, resolution, 3), dtype=np.uint8)
start = time.perf_counter()
inception.inception_features(x[:batch * jax.local_device_count()], params=params, batch_size=batch, kernels=kernels)
warmup = time.perf_counter() - start
start = time.perf_counter()
inception.inception_features(x, params=params, batch_size=batch, kernels=kernels)
seconds = time.perf_counter() - start
print(json.dumps(dict(mode=mode, devices=jax.local_device_count(), batch_size=batch, images=images,
                      resolution=resolution, warmup_s=round(warmup, 1), seconds=round(seconds, 1),
                      images_per_second=round(images / seconds, 2), matmul_peak_gflops=round(peak, 1),
                      load_after=os.getloadavg())))
"""

MODES = ("one_device_per_core", "one_device", "one_device_native_convs")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=480)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--resolution", type=int, default=32)
  parser.add_argument("--modes", default=",".join(MODES))
  parser.add_argument("--json", default=None)
  args = parser.parse_args()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  results = []
  for mode in args.modes.split(","):
    if mode not in MODES:
      parser.error(f"unknown mode {mode!r}; choose from {MODES}")
    load_before = os.getloadavg()
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(args.images), str(args.batch_size),
                          str(args.resolution)], env=env, capture_output=True, text=True)
    if out.returncode:
      sys.exit(f"{mode} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["load_before"] = load_before
    print(json.dumps(result), flush=True)
    results.append(result)
  if args.json:
    import jax  # Only for the versions.
    from wgan_gp_jax.runner import host
    machine = dict(platform=platform.platform(), cpu=host.cpu_info(),
                   python=platform.python_version(), jax=jax.__version__, date=time.strftime("%Y-%m-%d %H:%M"))
    with open(args.json, "w") as f:
      json.dump(dict(machine=machine, results=results), f, indent=2)


if __name__ == "__main__":
  main()
