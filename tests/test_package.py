"""The package as users get it: ``pip install .`` gives an importable library, and its core needs only jax, flax and
optax."""

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import wgan_gp_jax

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _copy_of_the_repository(destination: pathlib.Path) -> pathlib.Path:
  """The files ``pip install .`` reads, without the virtual environment, runs and caches of the checkout."""
  ignored = shutil.ignore_patterns(".venv", ".ci-venv", "runs", "workdirs", ".cache", ".git", "__pycache__", "*.egg-info",
                                   "build", ".pytest_cache", "docs")
  shutil.copytree(REPO_ROOT, destination, ignore=ignored)
  return destination


def test_pip_install_gives_a_library_that_computes_a_penalty_from_another_folder(tmp_path):
  environment = tmp_path / "venv"
  # Without pip of its own: pip, setuptools and the dependencies come from this interpreter's environment (no
  # download at test time); the package itself does not.
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(environment)], check=True, timeout=120)
  python = environment / "bin" / "python"
  site_packages = pathlib.Path(subprocess.run(
      [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True, capture_output=True,
      text=True).stdout.strip())
  (site_packages / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
  source = _copy_of_the_repository(tmp_path / "source")
  installed = subprocess.run(
      [python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet", str(source)],
      capture_output=True, text=True, timeout=300)
  assert installed.returncode == 0, installed.stderr
  shutil.rmtree(source)  # nothing may be read from the copy once installed

  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  script = textwrap.dedent("""
      import jax, jax.numpy as jnp
      import wgan_gp_jax
      from wgan_gp_jax import losses
      real, fake = jnp.ones((4, 3)), jnp.zeros((4, 3))
      # A linear critic w.x has input gradient w everywhere: the penalty is (||w|| - 1)^2 = (2 - 1)^2.
      w = jnp.array([2.0, 0.0, 0.0])
      penalty = losses.gradient_penalty(lambda x: x @ w, real, fake, jax.random.key(0))
      from wgan_gp_jax.kernels import onednn  # its C++ source ships with the package, to be built where oneDNN is installed
      print(wgan_gp_jax.__version__, losses.__file__, float(penalty), onednn.SOURCE.is_file())
      """)
  environment_variables = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
  ran = subprocess.run([python, "-c", script], cwd=elsewhere, capture_output=True, text=True, timeout=120,
                       env={**environment_variables, "JAX_PLATFORMS": "cpu"})
  assert ran.returncode == 0, ran.stderr
  version, module_file, penalty, has_onednn_source = ran.stdout.split()
  assert has_onednn_source == "True"
  assert version == wgan_gp_jax.__version__
  assert pathlib.Path(module_file).is_relative_to(site_packages), module_file
  assert abs(float(penalty) - 1.0) < 1e-5


def test_the_core_imports_none_of_the_optional_dependencies():
  optional = ["ml_collections", "orbax", "grain", "tensorflow_datasets", "tensorflow", "scipy", "matplotlib",
              "tensorboardX", "PIL", "absl", "tqdm", "etils"]
  script = textwrap.dedent(f"""
      import sys
      import wgan_gp_jax.losses, wgan_gp_jax.models, wgan_gp_jax.train
      # flax imports absl itself; we check only what our modules add.
      optional = {optional!r}
      print(" ".join(sorted({{name.split(".")[0] for name in sys.modules}} & set(optional))))
      """)
  baseline = subprocess.run([sys.executable, "-c", "import sys, flax.linen, flax.struct, optax, jax; "
                             f"print(' '.join(sorted({{n.split('.')[0] for n in sys.modules}} & set({optional!r}))))"],
                            cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=120)
  ran = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
                       timeout=120)
  assert set(ran.stdout.split()) == set(baseline.stdout.split())
  for name in ["ml_collections", "orbax", "grain", "tensorflow_datasets", "scipy", "matplotlib"]:
    assert name not in ran.stdout.split()


def test_the_version_is_in_one_place():
  pyproject = (REPO_ROOT / "pyproject.toml").read_text()
  assert 'dynamic = ["version"]' in pyproject
  assert 'version = { attr = "wgan_gp_jax.__version__" }' in pyproject
  assert wgan_gp_jax.__version__.count(".") == 2
