"""The work-directory lock: a live holder refuses a second trainer, a stale lock is taken over, heartbeats renew it."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from wgan_gp_jax.runner import workdir as workdir_lib, workdir_lock


def _write_lock(directory, *, host=None, pid, heartbeat_age=0.0, token="other"):
  now = time.time()
  record = {"host": host or socket.gethostname(), "pid": pid, "started": now - 3600, "heartbeat": now - heartbeat_age,
            "token": token}
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
  _write_lock(tmp_path, pid=live_process.pid)
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
