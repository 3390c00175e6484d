import pathlib
import shutil

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """The read-only real data beside the checkout (../shared/data); tests skip where a clone lacks it."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"real data not found at {SHARED_DATA} (it sits beside the checkout in this project's CI)")
  return SHARED_DATA


@pytest.fixture(scope="session")
def face_folder(shared_data, tmp_path_factory) -> pathlib.Path:
  """A folder of the first 64 real CelebA faces, small enough for tests that train or prepare data."""
  folder = tmp_path_factory.mktemp("faces")
  for path in sorted((shared_data / "celeba_10k" / "images").glob("*.jpg"))[:64]:
    shutil.copy(path, folder)
  return folder
