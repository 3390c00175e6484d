"""The work-directory lock: a live holder refuses a second trainer, a stale lock is taken over, heartbeats renew it."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from wgan_gp_jax.runner import workdir as workdir_lib, workdir_lock

# Linux's /proc gives a process's start time and the boot id; elsewhere the lock is what it was before them.
needs_proc = pytest.mark.skipif(workdir_lock.boot_id() is None or workdir_lock.process_start(os.getpid()) is None,
                                reason="no /proc here: locks name a holder by host and process id only")


def _write_lock(directory, *, host=None, pid, heartbeat_age=0.0, token="other", **identity):
  """A lock file as a holder writes it; without ``identity`` (``boot_id``, ``process_start``) as earlier versions
  wrote it."""
  now = time.time()
  record = {"host": host or socket.gethostname(), "pid": pid, "started": now - 3600, "heartbeat": now - heartbeat_age,
            "token": token, **identity}
  (directory / workdir_lib.LOCK_FILENAME).write_text(json.dumps(record))


def _holder_pid(directory) -> int:
  return json.loads((directory / workdir_lib.LOCK_FILENAME).read_text())["pid"]


@pytest.fixture
def live_process():
  process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
  yield process
  process.kill()
  process.wait()


def test_a_live_holder_on_this_host_is_refused_by_name(tmp_path, live_process):
  _write_lock(tmp_path, pid=live_process.pid)  # a lock file of an earlier version: no boot id, no start time
  with pytest.raises(workdir_lock.WorkdirLocked) as refused:
    workdir_lock.WorkdirLock(tmp_path).acquire()
  message = str(refused.value)
  assert message.startswith(f"{tmp_path} is in use by process {live_process.pid} on host {socket.gethostname()},"
                            " started ")
  assert "another trainer is writing there" in message and "after 300 s without a heartbeat" in message
  assert _holder_pid(tmp_path) == live_process.pid, "a refused trainer must leave the lock alone"


def test_the_lock_of_a_dead_process_is_taken_over_and_released(tmp_path):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  _write_lock(tmp_path, pid=dead.pid)
  with workdir_lock.WorkdirLock(tmp_path):
    assert _holder_pid(tmp_path) == os.getpid()
    with pytest.raises(workdir_lock.WorkdirLocked, match=f"in use by process {os.getpid()} on host"):
      workdir_lock.WorkdirLock(tmp_path).acquire()  # a second trainer in this very process is refused too
  assert not (tmp_path / workdir_lib.LOCK_FILENAME).exists()
  assert sorted(p.name for p in tmp_path.iterdir()) == [], "no temporary or stale lock files are left"


def test_a_holder_on_another_host_is_stale_only_without_a_recent_heartbeat(tmp_path):
  _write_lock(tmp_path, host="another-host", pid=1, heartbeat_age=10)
  with pytest.raises(workdir_lock.WorkdirLocked, match="process 1 on host another-host, .* last heartbeat 10 s ago"):
    workdir_lock.WorkdirLock(tmp_path, stale_after_seconds=60).acquire()
  _write_lock(tmp_path, host="another-host", pid=1, heartbeat_age=61)
  with workdir_lock.WorkdirLock(tmp_path, stale_after_seconds=60):
    assert _holder_pid(tmp_path) == os.getpid()


def test_an_unreadable_lock_file_is_stale(tmp_path):
  (tmp_path / workdir_lib.LOCK_FILENAME).write_text("{not json")
  with workdir_lock.WorkdirLock(tmp_path):
    assert _holder_pid(tmp_path) == os.getpid()


def test_the_heartbeat_is_renewed_while_held(tmp_path):
  with workdir_lock.WorkdirLock(tmp_path, heartbeat_seconds=0.05):
    first = json.loads((tmp_path / workdir_lib.LOCK_FILENAME).read_text())["heartbeat"]
    time.sleep(0.3)
    later = json.loads((tmp_path / workdir_lib.LOCK_FILENAME).read_text())["heartbeat"]
  assert later > first


def test_of_trainers_starting_together_exactly_one_gets_the_lock(tmp_path):
  outcomes = []
  barrier = threading.Barrier(8)

  def start():
    lock = workdir_lock.WorkdirLock(tmp_path)
    barrier.wait()
    try:
      lock.acquire()
      outcomes.append(lock)
    except workdir_lock.WorkdirLocked:
      outcomes.append(None)

  threads = [threading.Thread(target=start) for _ in range(8)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  winners = [lock for lock in outcomes if lock is not None]
  assert len(winners) == 1 and len(outcomes) == 8
  winners[0].release()


def test_a_second_trainer_on_a_live_run_exits_at_once_naming_it(tmp_path):
  # A trainer is live in the directory (a process of this host whose lock is fresh): the command refuses to start.
  from checkpoint_testing import REPO_ROOT, TOY_CONFIG_FILE, TOY_OVERRIDES, train_command
  live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
  try:
    _write_lock(tmp_path, pid=live.pid)
    result = subprocess.run(train_command(TOY_CONFIG_FILE, tmp_path, TOY_OVERRIDES), cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu"},
                            capture_output=True, text=True, timeout=300)
  finally:
    live.kill()
    live.wait()
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(
      f"error: {tmp_path} is in use by process {live.pid} on host {socket.gethostname()}, started ")
  assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.jsonl").exists()


@needs_proc
def test_the_lock_records_the_boot_and_the_start_time_of_its_holder(tmp_path):
  with workdir_lock.WorkdirLock(tmp_path):
    record = json.loads((tmp_path / workdir_lib.LOCK_FILENAME).read_text())
  assert record["boot_id"] == workdir_lock.boot_id() and len(record["boot_id"]) == 36  # a UUID
  assert record["process_start"] == workdir_lock.process_start(os.getpid()) > 0
  assert workdir_lock.process_start(os.getppid()) <= record["process_start"]  # the parent started first


@needs_proc
def test_a_holder_with_the_right_boot_and_start_time_is_live(tmp_path, live_process):
  _write_lock(tmp_path, pid=live_process.pid, boot_id=workdir_lock.boot_id(),
              process_start=workdir_lock.process_start(live_process.pid))
  with pytest.raises(workdir_lock.WorkdirLocked, match=f"in use by process {live_process.pid} on host"):
    workdir_lock.WorkdirLock(tmp_path).acquire()
  assert _holder_pid(tmp_path) == live_process.pid


@needs_proc
def test_a_process_id_that_another_process_has_now_is_a_stale_lock_taken_over_at_once(tmp_path, live_process, caplog):
  """After a container restart the lock's process id is given again: a process lives under it, with another start
  time. The lock is taken over now, not after stale_after_seconds, and the log says why."""
  start = workdir_lock.process_start(live_process.pid)
  _write_lock(tmp_path, pid=live_process.pid, boot_id=workdir_lock.boot_id(), process_start=start - 1)
  with caplog.at_level(logging.WARNING), workdir_lock.WorkdirLock(tmp_path):
    assert _holder_pid(tmp_path) == os.getpid()
  assert (f"taking over the stale lock of process {live_process.pid} on host {socket.gethostname()}" in caplog.text
          and f"process id {live_process.pid} now belongs to another process (started at tick {start} since boot,"
          f" the holder at tick {start - 1}): the machine or container restarted" in caplog.text), caplog.text


@needs_proc
def test_a_lock_of_another_boot_is_stale_at_once(tmp_path, live_process, caplog):
  """After a reboot: the same process id and even the same start time, but another boot id."""
  _write_lock(tmp_path, pid=live_process.pid, boot_id="00000000-0000-0000-0000-000000000000",
              process_start=workdir_lock.process_start(live_process.pid))
  with caplog.at_level(logging.WARNING), workdir_lock.WorkdirLock(tmp_path):
    assert _holder_pid(tmp_path) == os.getpid()
  assert ("it was written before this machine restarted (boot id 00000000-0000-0000-0000-000000000000, now"
          f" {workdir_lock.boot_id()})") in caplog.text, caplog.text


def test_two_real_trainers_on_one_work_directory(tmp_path, compilation_cache):
  """A real ``experiments.train`` holds the work directory; a second one started on it exits at once, status 1, with
  one line naming the first (host, process id); the first finishes normally. So that the test does not hang on
  timing, the first is stopped (SIGSTOP) once it holds the lock, while the second runs, and continued afterwards: a
  stopped process is as alive as a busy one."""
  from checkpoint_testing import REPO_ROOT, TOY_CONFIG_FILE, TOY_OVERRIDES, subprocess_env, train_command
  workdir, lock_file = tmp_path / "run", tmp_path / "run" / workdir_lib.LOCK_FILENAME
  command = train_command(TOY_CONFIG_FILE, workdir, TOY_OVERRIDES)
  env = subprocess_env(compilation_cache)
  with open(tmp_path / "first.log", "w") as first_log:
    first = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stderr=first_log, text=True)
  try:
    deadline = time.monotonic() + 300
    while not (lock_file.exists() and _holder_pid(workdir) == first.pid):
      assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
      time.sleep(0.01)
    os.kill(first.pid, signal.SIGSTOP)
    try:
      second = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    finally:
      os.kill(first.pid, signal.SIGCONT)
    first.wait(timeout=300)
  finally:
    if first.poll() is None:
      first.kill()
      first.wait()
  assert second.returncode == 1, second.stderr[-3000:]
  assert "Traceback" not in second.stderr
  lines = second.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(
      f"error: {workdir} is in use by process {first.pid} on host {socket.gethostname()}, started "), second.stderr
  assert first.returncode == 0, (tmp_path / "first.log").read_text()[-3000:]
  assert not lock_file.exists(), "the first released its lock at the end"
  assert json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])["step"] == TOY_OVERRIDES["num_steps"]
