"""One trainer per work directory: ``DIR/lock.json`` names the live run that writes there.

A second trainer on a live run's directory (a resubmitted job, a forgotten shell) is refused at once with
``WorkdirLocked``, whose message names the holder (host, process id, start time, last heartbeat). A lock left by a run
that died without releasing it (``kill -9``, a lost VM) does not block a restart: it is stale, and taken over with a
log line saying why, when its heartbeat, which a live holder renews every ``heartbeat_seconds``, is older than
``stale_after_seconds`` (a holder on another host), or, for a holder on this host, at once when its process is gone.

A process is known by more than its id: on Linux the lock also records the kernel's boot id
(``/proc/sys/kernel/random/boot_id``) and the holder's start time (field 22 of ``/proc/PID/stat``, clock ticks since
boot). After a restart of the machine or of a container, whose process ids start again from 1, the lock's process id
may belong to another process: one with another start time, or the lock is of another boot. Such a lock is stale at
once, not after ``stale_after_seconds``. Where there is no ``/proc``, and for lock files written before these fields,
a holder on this host is live while any process has its id.

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
  """Who holds a lock, as written in the lock file. ``boot_id`` and ``process_start`` are None where the holder's
  machine has no ``/proc`` and in lock files of earlier versions."""
  host: str
  pid: int
  started: float  # Unix time
  heartbeat: float  # Unix time of the last renewal
  token: str  # unique per acquisition
  boot_id: str | None = None  # /proc/sys/kernel/random/boot_id of the holder's machine
  process_start: int | None = None  # field 22 of /proc/PID/stat: the holder's start, in clock ticks since boot

  def describe(self, now: float) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
    return (f"process {self.pid} on host {self.host}, started {started}, last heartbeat"
            f" {max(0.0, now - self.heartbeat):.0f} s ago")


def _read_holder(path: epath.Path) -> Holder:
  record = json.loads(path.read_text())
  recorded_boot, recorded_start = record.get("boot_id"), record.get("process_start")  # absent in earlier versions
  return Holder(host=str(record["host"]), pid=int(record["pid"]), started=float(record["started"]),
                heartbeat=float(record["heartbeat"]), token=str(record["token"]),
                boot_id=None if recorded_boot is None else str(recorded_boot),
                process_start=None if recorded_start is None else int(recorded_start))


def _process_exists(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # It exists, under another user.
    return True
  return True


BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
UNREADABLE_TOKEN = "unreadable"  # the token of a lock file that cannot be read


def boot_id() -> str | None:
  """This machine's boot id (a new one at every boot), None where there is no ``/proc``."""
  try:
    with open(BOOT_ID_FILE) as file:
      return file.read().strip() or None
  except OSError:
    return None


def process_start(pid: int) -> int | None:
  """When process ``pid`` started, in clock ticks since boot (field 22 of ``/proc/PID/stat``); None where there is no
  such process, no ``/proc`` or it cannot be read."""
  try:
    with open(f"/proc/{pid}/stat") as file:
      stat = file.read()
  except OSError:
    return None
  # Field 2 is the command name in parentheses, which may hold spaces and parentheses: count from the last ")".
  fields_from_3 = stat[stat.rindex(")") + 1:].split()
  try:
    return int(fields_from_3[22 - 3])
  except (IndexError, ValueError):
    return None


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
      return Holder(host="?", pid=-1, started=0.0, heartbeat=0.0, token=UNREADABLE_TOKEN)

  def stale_reason(self, holder: Holder) -> str | None:
    """Why ``holder``'s lock is stale, None while it is live.

    Stale: a heartbeat older than ``stale_after_seconds``; or a holder on this host whose process is gone, whose lock
    is of another boot of the machine, or whose process id belongs to a process with another start time (the machine
    or container restarted, and the id was given again). A holder without a boot id or a start time (no ``/proc``, an
    earlier version's lock) is live while a process has its id.
    """
    if holder.token == UNREADABLE_TOKEN:
      return "the lock file cannot be read"
    age = self._clock() - holder.heartbeat
    if age > self.stale_after_seconds:
      return f"its last heartbeat is {age:.0f} s old, over {self.stale_after_seconds:g} s"
    if holder.host != socket.gethostname():
      return None
    this_boot = boot_id()
    if holder.boot_id is not None and this_boot is not None and holder.boot_id != this_boot:
      return f"it was written before this machine restarted (boot id {holder.boot_id}, now {this_boot})"
    if not _process_exists(holder.pid):
      return f"its process {holder.pid} is gone"
    started = process_start(holder.pid)
    if holder.process_start is not None and started is not None and started != holder.process_start:
      return (f"process id {holder.pid} now belongs to another process (started at tick {started} since boot, the"
              f" holder at tick {holder.process_start}): the machine or container restarted")
    return None

  def is_stale(self, holder: Holder) -> bool:
    return self.stale_reason(holder) is not None

  # --- acquiring and releasing ---

  def acquire(self) -> None:
    """Takes the lock, taking over a stale one; raises ``WorkdirLocked`` naming a live holder."""
    now = self._clock()
    mine = Holder(host=socket.gethostname(), pid=os.getpid(), started=now, heartbeat=now, token=uuid.uuid4().hex,
                  boot_id=boot_id(), process_start=process_start(os.getpid()))
    self.path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
      holder = self.read_holder()
      if holder is not None:
        reason = self.stale_reason(holder)
        if reason is None:
          raise WorkdirLocked(self._refusal(holder))
        logging.warning("taking over the stale lock of %s in %s: %s", holder.describe(self._clock()),
                        self.path.parent, reason)
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
            f" process is gone or the machine restarted (same host) or after {self.stale_after_seconds:g} s without a"
            f" heartbeat"
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
        moved_token = UNREADABLE_TOKEN
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
