"""``python -m experiments.train`` whose checkpoint commits each wait half a second before the final rename.

The wait widens the moment a save is in progress, so that a test can kill the process during a save without
depending on luck. Nothing else changes: what is written, and when it counts as complete, is orbax's as always.
"""

import asyncio
import runpy
import sys

from orbax.checkpoint.path import atomicity

COMMIT_DELAY_SECONDS = 0.5


def slow_down_commits() -> None:
  commit = atomicity.AtomicRenameTemporaryPath.finalize

  async def slow_commit(self):
    await asyncio.sleep(COMMIT_DELAY_SECONDS)
    await commit(self)

  atomicity.AtomicRenameTemporaryPath.finalize = slow_commit


if __name__ == "__main__":
  slow_down_commits()
  sys.argv[0] = "experiments.train"
  runpy.run_module("experiments.train", run_name="__main__")
