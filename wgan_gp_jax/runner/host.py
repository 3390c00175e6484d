"""Host settings that XLA:CPU's speed depends on."""

import ctypes
import ctypes.util
import os
import platform
import re
import sys

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -2, -4, -8
_TOP_PAD_BYTES = 64 << 20
_NEVER_TRIM = 2**31 - 1


def keep_freed_memory() -> bool:
  """Makes glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

  XLA:CPU allocates the buffers of every execution with ``posix_memalign``.
  glibc serves requests above 32 MiB (and, from a thread's own arena, any that
  the arena cannot hold) with a fresh ``mmap`` and unmaps it on ``free``, so
  each training step page-faults, and the kernel zeroes, its working set anew:
  about a fifth of a 32x32 critic step on a 2-core machine. With one arena, no
  ``mmap`` and no trimming, freed buffers are reused. The process keeps its
  peak footprint until it exits.

  Call it before the first computation (threads that already allocated keep
  their arenas). Returns whether it applied: only on Linux with glibc.
  """
  if not sys.platform.startswith("linux"):
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.gnu_get_libc_version  # raises AttributeError where the C library is not glibc
  except (OSError, AttributeError):
    return False
  settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM), (_M_TOP_PAD, _TOP_PAD_BYTES))
  return all(libc.mallopt(parameter, value) == 1 for parameter, value in settings)


def usable_cores() -> int:
  """The cores this process may run on (its affinity mask where the OS has one)."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def one_device_per_core() -> int:
  """Makes XLA:CPU present one single-threaded device per core, for many independent programs at once.

  XLA:CPU runs one program's operations one after another, and only its
  matrix products use all cores: its elementwise loops (for the FID Inception,
  the Winograd transforms and pools, about half the time) run on one thread.
  Work that splits into independent programs, such as Inception features
  batch by batch, goes faster as one program per core on single-threaded
  devices (BENCHMARKS.md: 17 against 15.6 images/s on 2 cores). Training, one
  program at a time, wants the default.

  Sets ``XLA_FLAGS``, so call it before JAX creates its CPU backend (before the
  first computation), and only in a program's entry point: it applies to the
  whole process. Leaves a device count already in ``XLA_FLAGS`` alone.
  Returns the number of CPU devices the process will have.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  match = re.search(r"--xla_force_host_platform_device_count=(\d+)", flags)
  if match:
    return int(match.group(1))
  cores = usable_cores()
  os.environ["XLA_FLAGS"] = (f"{flags} --xla_force_host_platform_device_count={cores} "
                             "--xla_cpu_multi_thread_eigen=false").strip()
  return cores


def _cpuinfo_fields() -> dict[str, str]:
  """The first processor's ``key: value`` lines of ``/proc/cpuinfo`` (empty where there is none)."""
  fields = {}
  try:
    with open("/proc/cpuinfo") as cpuinfo:
      for line in cpuinfo:
        if not line.strip():
          break
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
  except OSError:
    pass
  return fields


def cpu_model() -> str:
  """The CPU's model name (``/proc/cpuinfo``), for the machine line of every figure."""
  return _cpuinfo_fields().get("model name") or platform.processor() or "unknown CPU"


def cpu_description() -> str:
  """``cpu_model()`` with its family and model numbers (``AMD EPYC (family 25 model 17)``): model names alone do not
  tell apart the CPU generations a cloud's machines change between."""
  fields = _cpuinfo_fields()
  if fields.get("cpu family") is None:
    return cpu_model()
  return f"{cpu_model()} (family {fields['cpu family']} model {fields.get('model')})"


def cpu_info() -> dict[str, object]:
  """What a benchmark figure depends on: model name, family/model/stepping, core count and ISA flags.

  Speed figures hold only as ratios measured on one machine (this project's
  machines change CPU between sessions), so every benchmark JSON records this.
  """
  fields = _cpuinfo_fields()
  cores = usable_cores()
  return {"model": cpu_model(), "family": fields.get("cpu family"), "model_number": fields.get("model"),
          "stepping": fields.get("stepping"), "cores": cores, "machine": platform.machine(),
          "flags": sorted(fields.get("flags", "").split())}
