"""The package's layers, read from every import statement (function-level ones included):

  kernels  <  core (the package root, models, data, metrics)  <  runner  <  experiments, benchmarks

Nothing imports upward; the core reaches the kernels only through their interface, ``wgan_gp_jax.kernels``.
"""

import ast
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "wgan_gp_jax"
LAYERS = {"kernels": 0, "core": 1, "runner": 2, "commands": 3}


def _layer(module: str) -> str:
  parts = module.split(".")
  if parts[0] in ("experiments", "benchmarks"):
    return "commands"
  if parts[0] != "wgan_gp_jax":
    raise ValueError(f"not one of ours: {module}")
  if len(parts) > 1 and parts[1] in ("kernels", "runner"):
    return parts[1]
  return "core"


def _module_name(path: pathlib.Path, root: pathlib.Path = REPO_ROOT) -> str:
  parts = list(path.relative_to(root).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def _imports(path: pathlib.Path, root: pathlib.Path = REPO_ROOT) -> list[tuple[int, str]]:
  """``(line, module)`` of every import of our own modules in ``path``; ``from a import b`` counts as ``a.b`` where
  ``a.b`` is a module, else as ``a``."""
  found = []
  name = _module_name(path, root)
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      found.extend((node.lineno, alias.name) for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
      for alias in node.names:
        candidate = f"{base}.{alias.name}"
        candidate_path = root / pathlib.Path(*candidate.split("."))
        is_module = candidate_path.with_suffix(".py").exists() or candidate_path.is_dir()
        found.append((node.lineno, candidate if is_module else base))
  return [(line, module) for line, module in found if module.split(".")[0] in ("wgan_gp_jax", "experiments",
                                                                                 "benchmarks")]


def _our_files():
  files = sorted(PACKAGE.rglob("*.py"))
  files += sorted((REPO_ROOT / "experiments").rglob("*.py")) + sorted((REPO_ROOT / "benchmarks").rglob("*.py"))
  return files


def test_the_layers_exist_where_the_layout_says():
  for folder in ("kernels", "runner", "models", "data", "metrics"):
    assert (PACKAGE / folder / "__init__.py").is_file(), folder
  assert (PACKAGE / "kernels" / "onednn_kernels.cc").is_file()
  for core_module in ("losses", "objectives", "optimizers", "augment", "train"):
    assert (PACKAGE / f"{core_module}.py").is_file(), core_module


@pytest.mark.parametrize("path", _our_files(), ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_nothing_imports_upward(path):
  importer = _layer(_module_name(path))
  upward = [f"line {line}: {module} ({_layer(module)})" for line, module in _imports(path)
            if LAYERS[_layer(module)] > LAYERS[importer]]
  assert not upward, f"{path.relative_to(REPO_ROOT)} ({importer}) imports a higher layer: {upward}"


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.rglob("*.py") if _layer(_module_name(p)) != "kernels"),
                         ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_the_library_reaches_the_kernels_only_through_their_interface(path):
  backend_modules = [f"line {line}: {module}" for line, module in _imports(path)
                     if module.startswith("wgan_gp_jax.kernels.")]
  assert not backend_modules, f"{path.relative_to(REPO_ROOT)} imports a CPU backend module: {backend_modules}"


def test_the_reader_sees_function_level_imports_of_the_runner_and_of_a_backend_module(tmp_path):
  fake_package = tmp_path / "wgan_gp_jax"
  (fake_package / "runner").mkdir(parents=True)
  (fake_package / "kernels").mkdir()
  for name in ("runner/__init__.py", "runner/experiment.py", "kernels/__init__.py", "kernels/onednn.py"):
    (fake_package / name).write_text("")
  core = fake_package / "losses.py"
  core.write_text("import jax\ndef f():\n  from wgan_gp_jax.runner import experiment\n"
                  "  from wgan_gp_jax.kernels import onednn, Conv\n  from . import kernels\n")
  assert _imports(core, tmp_path) == [(3, "wgan_gp_jax.runner.experiment"), (4, "wgan_gp_jax.kernels.onednn"),
                                      (4, "wgan_gp_jax.kernels"), (5, "wgan_gp_jax.kernels")]
  assert [_layer(module) for _, module in _imports(core, tmp_path)] == ["runner", "kernels", "kernels", "kernels"]


def test_the_readme_layout_lists_every_folder_of_the_package_and_no_other():
  readme = (REPO_ROOT / "README.md").read_text()
  block = readme.split("## Layout", 1)[1].split("```", 2)[1]
  listed = {line.split()[0].rstrip("/") for line in block.splitlines() if line.strip()}
  package_folders = {f"wgan_gp_jax/{path.name}" for path in PACKAGE.iterdir()
                     if path.is_dir() and (path / "__init__.py").is_file()}
  assert package_folders | {"wgan_gp_jax"} <= listed, package_folders - listed
  for folder in listed:
    assert (REPO_ROOT / folder).is_dir(), f"README's layout lists {folder}, which does not exist"
