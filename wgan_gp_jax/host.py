"""Host settings that XLA:CPU's speed depends on."""

import ctypes
import ctypes.util
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
