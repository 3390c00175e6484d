"""The numpy reader of torch files: tensors match torch's own loader, and no pickle code runs."""

import collections
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from wgan_gp_jax.metrics import torch_pickle


class _Evil:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.mkdir, (self.marker,))


def _zip_with_pickle(path, payload: bytes):
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("archive/data.pkl", payload)
    archive.writestr("archive/version", "3\n")


def test_a_pickle_that_calls_a_function_is_refused_without_running_it(tmp_path):
  marker = tmp_path / "pwned"
  _zip_with_pickle(tmp_path / "evil.pt", pickle.dumps({"w": _Evil(str(marker))}, protocol=2))
  with pytest.raises(pickle.UnpicklingError, match="refusing to load global posix.mkdir"):
    torch_pickle.load_torch_file(tmp_path / "evil.pt")
  assert not marker.exists()


def test_legacy_stream_with_a_foreign_global_is_refused(tmp_path):
  marker = tmp_path / "pwned"
  path = tmp_path / "evil_legacy.pt"
  path.write_bytes(pickle.dumps(_Evil(str(marker)), protocol=2))
  with pytest.raises(pickle.UnpicklingError, match="refusing"):
    torch_pickle.load_torch_file(path)
  assert not marker.exists()


def test_flatten_arrays_keeps_only_arrays():
  tree = {"a": {"w": np.ones(2), "stride": 2}, "b": np.zeros(1), "c": [np.ones(1)]}
  assert sorted(torch_pickle.flatten_arrays(tree)) == ["a.w", "b"]


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_tensors_match_torch_for_both_file_formats(tmp_path, zipped, import_or_missing):
  torch = import_or_missing("torch", reason="torch is the reference for its own file format")
  g = torch.Generator().manual_seed(0)
  base = torch.randn(6, 5, generator=g)
  state = collections.OrderedDict(
    conv=torch.randn(4, 3, 3, 3, generator=g),
    transposed=base.t(),  # A strided view.
    row=base[2],  # An offset into a shared storage.
    ints=torch.arange(7, dtype=torch.int64),
    half=torch.randn(3, generator=g).half(),
    flags=torch.tensor([True, False]),
    scalar=torch.tensor(3.5, dtype=torch.float64),
  )
  path = tmp_path / "state.pt"
  torch.save(state, path, _use_new_zipfile_serialization=zipped)
  loaded = torch_pickle.load_torch_file(path)
  assert list(loaded) == list(state)
  for key, tensor in state.items():
    np.testing.assert_array_equal(loaded[key], tensor.numpy(), err_msg=key)
    assert loaded[key].dtype == tensor.numpy().dtype


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated, still writes.
def test_torchscript_module_parameters_match_torch(tmp_path, import_or_missing):
  torch = import_or_missing("torch", reason="torch writes the TorchScript archive")

  class Net(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
      self.block = torch.nn.Sequential(torch.nn.Linear(4, 2))

    def forward(self, x):
      return self.block(self.conv(x).mean((2, 3)))

  net = Net()
  path = tmp_path / "net.pt"
  torch.jit.save(torch.jit.script(net), str(path))
  tree = torch_pickle.load_torch_file(path)
  flat = torch_pickle.flatten_arrays(tree)
  reference = {k: v.detach().numpy() for k, v in net.state_dict().items()}
  assert set(flat) == set(reference)
  for key in reference:
    np.testing.assert_array_equal(flat[key], reference[key])
