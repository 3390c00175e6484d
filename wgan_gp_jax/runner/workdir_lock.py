"""One trainer per work directory: ``DIR/lock.json`` names the live run that writes there.

A second trainer on a live run's directory (a resubmitted job, a forgotten shell) is refused at once with
``WorkdirLocked``, whose message names the holder (host, process id, start time, last heartbeat). A lock left by a run
that died without releasing it (``kill -9``, a lost VM) does not block a restart: it is stale, and taken over, when
its process is gone (a holder on this host) or when its heartbeat, which a live holder renews every
``heartbeat_seconds``, is older than ``stale_after_seconds`` (a holder on another host, or a reused process id).

Of the processes of one multi-process run only process 0 takes the lock (``experiment`` tells the others the
outcome), so they do not refuse one another. On a local file system the lock file appears whole and at most once
(``os.link`` of a complete temporary file); on an object store (``gs://``), which has no exclusive create, the lock
is written and read back, which leaves a race of a moment between two starts that the heartbeat rule cannot see.
"""

import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Callable

from etils import epath

from wgan_gp_jax.runner import workdir as workdir_lib


class WorkdirLocked(RuntimeError):
  """Another live trainer holds the work directory."""


@dataclasses.dataclass(frozen=True)
class Holder:
  """Who holds a lock, as written in the lock file."""
  host: str
  pid: int
  started: float  # Unix time
  heartbeat: float  # Unix time of the last renewal
  token: str  # unique per acquisition

  def describe(self, now: float) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
    return (f"process {self.pid} on host {self.host}, started {started}, last heartbeat"
            f" {max(0.0, now - self.heartbeat):.0f} s ago")


def _read_holder(path: epath.Path) -> Holder:
  record = json.loads(path.read_text())
  return Holder(host=str(record["host"]), pid=int(record["pid"]), started=float(record["started"]),
                heartbeat=float(record["heartbeat"]), token=str(record["token"]))


def _process_exists(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # It exists, under another user.
    return True
  return True


class WorkdirLock:
  """The lock of one work directory; a context manager that acquires it, renews its heartbeat and releases it."""

  def __init__(self, workdir: epath.PathLike, *, stale_after_seconds: float = 300.0,
               heartbeat_seconds: float | None = None, clock: Callable[[], float] = time.time):
    if stale_after_seconds <= 0:
      raise ValueError(f"stale_after_seconds must be positive, got {stale_after_seconds}")
    self.path = workdir_lib.workdir_path(workdir) / workdir_lib.LOCK_FILENAME
    self.stale_after_seconds = stale_after_seconds
    self.heartbeat_seconds = heartbeat_seconds or min(30.0, stale_after_seconds / 4)
    self._clock = clock
    self._holder: Holder | None = None
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  # --- reading ---

  def read_holder(self) -> Holder | None:
    """The holder in the lock file, None when there is none; a file that is not a lock counts as a stale one."""
    try:
      return _read_holder(self.path)
    except FileNotFoundError:
      return None
    except (ValueError, KeyError, TypeError):
      return Holder(host="?", pid=-1, started=0.0, heartbeat=0.0, token="unreadable")

  def is_stale(self, holder: Holder) -> bool:
    if self._clock() - holder.heartbeat > self.stale_after_seconds:
      return True
    return holder.host == socket.gethostname() and not _process_exists(holder.pid)

  # --- acquiring and releasing ---

  def acquire(self) -> None:
    """Takes the lock, taking over a stale one; raises ``WorkdirLocked`` naming a live holder."""
    now = self._clock()
    mine = Holder(host=socket.gethostname(), pid=os.getpid(), started=now, heartbeat=now, token=uuid.uuid4().hex)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
      holder = self.read_holder()
      if holder is not None:
        if not self.is_stale(holder):
          raise WorkdirLocked(self._refusal(holder))
        logging.warning("taking over the stale lock of %s in %s", holder.describe(self._clock()), self.path.parent)
        self._remove_stale(holder)
      if self._create(mine):
        self._holder = mine
        self._start_heartbeat()
        return
    holder = self.read_holder()
    raise WorkdirLocked(self._refusal(holder) if holder else f"could not take the lock {self.path}")

  def release(self) -> None:
    """Stops the heartbeat and removes the lock file if it is still this lock's."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    if self._holder is not None:
      holder = self.read_holder()
      if holder is not None and holder.token == self._holder.token:
        self.path.unlink(missing_ok=True)
      self._holder = None

  def __enter__(self) -> "WorkdirLock":
    self.acquire()
    return self

  def __exit__(self, *exc_info) -> None:
    self.release()

  def _refusal(self, holder: Holder) -> str:
    return (f"{self.path.parent} is in use by {holder.describe(self._clock())}: another trainer is writing there."
            f" Stop it, or use another work directory; a lock left by a run that was killed is taken over once its"
            f" process is gone (same host) or after {self.stale_after_seconds:g} s without a heartbeat"
            f" ({self.path}).")

  def _record(self, holder: Holder) -> str:
    return json.dumps(dataclasses.asdict(holder)) + "\n"

  def _create(self, holder: Holder) -> bool:
    """Writes the lock file if there is none; True if this holder's is the one written."""
    if workdir_lib.is_local(self.path):
      tmp = self.path.parent / f".{self.path.name}.{holder.token}"
      tmp.write_text(self._record(holder))
      try:
        os.link(tmp, self.path)  # fails if the lock exists: the file appears whole, once
        return True
      except FileExistsError:
        return False
      finally:
        tmp.unlink(missing_ok=True)
    if self.path.exists():
      return False
    self.path.write_text(self._record(holder))
    time.sleep(0.5)  # let a concurrent writer's object land, then see whose is there
    current = self.read_holder()
    return current is not None and current.token == holder.token

  def _remove_stale(self, holder: Holder) -> None:
    """Removes the stale lock of ``holder``, unless another trainer took it over meanwhile."""
    if workdir_lib.is_local(self.path):
      aside = self.path.parent / f".{self.path.name}.stale.{uuid.uuid4().hex}"
      try:
        os.rename(self.path, aside)  # atomic: of two trainers taking over, one moves it
      except FileNotFoundError:
        return
      try:
        moved_token = _read_holder(aside).token
      except (ValueError, KeyError, TypeError):
        moved_token = "unreadable"
      if moved_token != holder.token:
        os.rename(aside, self.path)  # not the stale one: a live lock that appeared meanwhile; put it back
        return
      aside.unlink(missing_ok=True)
      return
    current = self.read_holder()
    if current is not None and current.token == holder.token:
      self.path.unlink(missing_ok=True)

  # --- the heartbeat ---

  def _start_heartbeat(self) -> None:
    self._stop.clear()
    self._thread = threading.Thread(target=self._beat, name="workdir-lock-heartbeat", daemon=True)
    self._thread.start()

  def _beat(self) -> None:
    while not self._stop.wait(self.heartbeat_seconds):
      current = self.read_holder()
      if current is None or current.token != self._holder.token:
        logging.error("the lock %s is no longer this run's (%s): another trainer took it over; stop one of them",
                      self.path, current.describe(self._clock()) if current else "removed")
        return
      self._holder = dataclasses.replace(self._holder, heartbeat=self._clock())
      workdir_lib.write_text_whole(self.path, self._record(self._holder))
