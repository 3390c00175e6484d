"""Work directories in a bucket (``gs://``), through a stand-in that keeps the bucket in a local folder.

What the stand-in replaces is only the network side of Google Cloud Storage: fsspec's ``gs`` file system (gcsfs on a
TPU VM) becomes a folder, tensorstore's ``gcs`` driver becomes its ``file`` driver on the same folder, and orbax's
question "does this bucket have a hierarchical namespace?" is answered no. Everything above runs as it does on a
bucket: the run sees the path ``gs://bucket/run``; ``etils.epath`` takes its URI path class and fsspec backend (no
local-path shortcut); orbax takes its GCS code paths (a ``commit_success.txt`` marker instead of an atomic rename);
TensorBoard events and ``metrics.jsonl`` are written whole (no append). What it does not show: credentials, gcsfs's
and tensorstore's own GCS clients, latency, and objects that appear late to another reader.
"""

import json
import os
import pathlib

import jax
import numpy as np
import pytest
from etils import epath
from etils.epath import backend as epath_backend
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem
from fsspec.registry import _registry as fsspec_registry  # pylint: disable=protected-access
from orbax.checkpoint._src.path import gcs_utils

from checkpoint_testing import assert_same_state, toy_config
from wgan_gp_jax.runner import experiment, workdir as workdir_lib

BUCKET_URI = "gs://bucket/run"


class _LocalBucketFileSystem(DirFileSystem):
  """fsspec's ``gs``: ``gs://NAME/KEY`` is ``<root>/NAME/KEY``."""
  protocol = ("gs", "gcs")
  root = ""

  def __init__(self, *args, **storage_options):
    del args, storage_options  # gcsfs's options (finalize_on_close...)
    super().__init__(path=self.root, fs=LocalFileSystem(auto_mkdir=True))


@pytest.fixture
def bucket(tmp_path, monkeypatch) -> pathlib.Path:
  """The local folder that holds the stand-in's buckets."""
  root = tmp_path / "buckets"
  (root / "bucket").mkdir(parents=True)
  monkeypatch.setattr(_LocalBucketFileSystem, "root", str(root))
  for protocol in _LocalBucketFileSystem.protocol:
    monkeypatch.setitem(fsspec_registry, protocol, _LocalBucketFileSystem)
  _LocalBucketFileSystem.clear_instance_cache()
  epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access

  def file_kvstore(path: str) -> dict:
    bucket_name, key = gcs_utils.parse_gcs_path(path, add_trailing_slash=False)
    return {"driver": "file", "path": os.path.join(root, bucket_name, key)}

  monkeypatch.setattr(gcs_utils, "get_kvstore_for_gcs", file_kvstore)
  monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
  yield root
  epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access


def test_the_stand_in_is_reached_through_the_uri_code_path(bucket):
  path = epath.Path(BUCKET_URI) / "probe.txt"
  assert not workdir_lib.is_local(path)
  assert os.fspath(path) == "gs://bucket/run/probe.txt"
  assert path._backend is epath_backend.fsspec_backend  # pylint: disable=protected-access
  workdir_lib.write_text_whole(path, "hello")
  assert (bucket / "bucket" / "run" / "probe.txt").read_text() == "hello"
  assert [p.name for p in epath.Path(BUCKET_URI).iterdir()] == ["probe.txt"]
  assert not any(p.name.endswith(".tmp") for p in (bucket / "bucket" / "run").iterdir())


def test_a_run_in_the_bucket_resumes_bit_identically(bucket, tmp_path):
  # Without the learning rates' linear decay, 10 steps continued to 20 are the 20-step run.
  overrides = {"checkpoint.every": 10, "logging.figure_every": 10, "critic.linear_decay": False,
               "generator.linear_decay": False}
  config = toy_config(num_steps=20, **overrides)
  reference = experiment.train_and_evaluate(config, tmp_path / "local")

  first = experiment.train_and_evaluate(toy_config(num_steps=10, **overrides), BUCKET_URI)
  assert int(first.state.step) == 10
  local_copy = bucket / "bucket" / "run"
  # orbax's GCS path: no rename, a marker file once a checkpoint is complete.
  assert (local_copy / "checkpoints" / "10" / "commit_success.txt").is_file()
  resumed = experiment.train_and_evaluate(config, BUCKET_URI)

  assert_same_state(resumed.state, reference.state)
  loaded = experiment.load_run(BUCKET_URI)
  assert_same_state(loaded.state, reference.state)
  np.testing.assert_array_equal(loaded.sample(64, seed=1), reference.sample(64, seed=1))

  def metrics(directory: pathlib.Path) -> list[dict]:
    records = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    return [{key: value for key, value in record.items() if key != "seconds"} for record in records]

  assert metrics(local_copy) == metrics(tmp_path / "local")
  # What a finished toy run leaves, and nothing else: no lock, no write probe, no temporary file.
  assert sorted(p.name for p in local_copy.iterdir()) == [
      "checkpoints", "config.json", "figures", "metrics.jsonl", "tensorboard"]
  assert json.loads((local_copy / "config.json").read_text())["num_steps"] == 20
  assert sorted(p.name for p in (local_copy / "figures").iterdir()) == ["step_000010.png", "step_000020.png"]
  # One event file per start, each written whole.
  assert len(list((local_copy / "tensorboard").iterdir())) == 2
  assert not list(local_copy.rglob("*.tmp"))
  assert jax.tree.leaves(resumed.state)  # the state is not empty
