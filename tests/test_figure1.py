"""The paper's Figure 1 (issue 33): ``experiments.value_surfaces`` (1a) and ``experiments.gradient_norms`` (1b) run end
to end on tiny settings, write their files with the specified keys, and show what the figure is about: the clipped
critics' parameters stay in ``[-c, c]`` and pile up there, the gradients of a deep clipped critic vanish towards its
input, and the penalty keeps the input gradient nearer norm 1 than clipping does.

The commands define absl flags (``--workdir``, ``--steps``, ``--seed``) that other commands define too, so they are run
as the user runs them, in their own processes, never imported here.
"""

import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG"


def _run(module: str, workdir: pathlib.Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
  result = subprocess.run([sys.executable, "-m", f"experiments.{module}", f"--workdir={workdir}", *args],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-4000:]
  return result


@pytest.fixture(scope="module")
def value_surfaces(command_env, tmp_path_factory) -> tuple[pathlib.Path, dict]:
  workdir = tmp_path_factory.mktemp("value_surfaces")
  _run("value_surfaces", workdir, command_env, "--steps=100", "--width=16", "--batch_size=32", "--seed=3")
  return workdir, json.loads((workdir / "value_surfaces.json").read_text())


@pytest.fixture(scope="module")
def gradient_norms(command_env, tmp_path_factory) -> tuple[pathlib.Path, dict, dict]:
  workdir = tmp_path_factory.mktemp("gradient_norms")
  _run("gradient_norms", workdir, command_env, "--steps=5", "--width=16", "--batch_size=16", "--n_critic=2")
  return (workdir, json.loads((workdir / "gradient_norms.json").read_text()),
          json.loads((workdir / "gradient_norms_settings.json").read_text()))


def test_value_surfaces_writes_six_panels_and_the_settings(value_surfaces):
  workdir, summary = value_surfaces
  assert (workdir / "value_surfaces.png").read_bytes()[:4] == PNG_MAGIC
  assert summary["settings"]["steps"] == 100 and summary["settings"]["width"] == 16
  assert summary["settings"]["seed"] == 3 and summary["settings"]["batch_size"] == 32
  assert set(summary["panels"]) == {f"{method}/{dataset}" for method in ("clipping", "penalty")
                                    for dataset in ("8gaussians", "25gaussians", "swissroll")}
  for panel in summary["panels"].values():
    assert all(math.isfinite(value) for value in panel.values())
    assert panel["value_min"] <= panel["mean_real_score"] or panel["value_min"] <= panel["mean_fake_score"]
    assert panel["value_min"] < panel["value_max"]


def test_value_surfaces_clipped_critics_stay_in_range_and_the_penalty_keeps_gradients_near_one(value_surfaces):
  _, summary = value_surfaces
  for dataset in ("8gaussians", "25gaussians", "swissroll"):
    clipped, penalised = summary["panels"][f"clipping/{dataset}"], summary["panels"][f"penalty/{dataset}"]
    assert clipped["max_abs_parameter"] <= np.float32(0.01)  # the parameters are float32
    assert penalised["max_abs_parameter"] > 0.01  # the penalty leaves the weights free
    assert abs(penalised["gradient_norm_interpolates"] - 1) < abs(clipped["gradient_norm_interpolates"] - 1)
    # Both critics score the real points above the fakes: they learnt which is which.
    assert clipped["wasserstein_estimate"] > 0 and penalised["wasserstein_estimate"] > 0


def test_value_surfaces_rerun_is_bit_identical(value_surfaces, command_env, tmp_path):
  _, summary = value_surfaces
  _run("value_surfaces", tmp_path, command_env, "--steps=100", "--width=16", "--batch_size=32", "--seed=3")
  again = json.loads((tmp_path / "value_surfaces.json").read_text())
  for name, panel in summary["panels"].items():
    assert {k: v for k, v in again["panels"][name].items() if k != "seconds"} == {
        k: v for k, v in panel.items() if k != "seconds"}


def test_gradient_norms_writes_twelve_norms_per_setting(gradient_norms):
  workdir, norms, settings = gradient_norms
  assert (workdir / "gradient_norms.png").read_bytes()[:4] == PNG_MAGIC
  assert list(norms) == ["clip_0.1", "clip_0.01", "clip_0.001", "gp"]
  for values in norms.values():
    assert len(values) == 12 and all(math.isfinite(v) and v > 0 for v in values)
  assert settings["settings"]["width"] == 16 and settings["settings"]["steps"] == 5
  assert settings["settings"]["hidden_layers"] == 12 and set(settings["per_setting"]) == set(norms)


def test_gradient_norms_clipping_bounds_the_weights_and_they_pile_up_at_the_bound(gradient_norms):
  _, _, settings = gradient_norms
  for setting, c in (("clip_0.1", 0.1), ("clip_0.01", 0.01), ("clip_0.001", 0.001)):
    numbers = settings["per_setting"][setting]
    assert numbers["max_abs_critic_parameter"] <= np.float32(c)  # float32 parameters: np.float32(0.1) > 0.1
    assert numbers["share_of_weights_at_bound"] > 0.5
    counts, edges = numbers["weight_histogram"]["counts"], numbers["weight_histogram"]["edges"]
    assert len(counts) + 1 == len(edges) and -np.float32(c) <= edges[0] and edges[-1] <= np.float32(c)
  assert settings["per_setting"]["gp"]["max_abs_critic_parameter"] > 0.1


def test_gradient_norms_vanish_through_a_deep_clipped_critic_not_a_penalised_one(gradient_norms):
  _, norms, settings = gradient_norms
  # c = 0.001: each layer scales the gradient down by about c * sqrt(width); 11 layers leave nothing of it.
  assert norms["clip_0.001"][0] < 1e-10 * norms["clip_0.001"][-1]
  assert norms["clip_0.001"][0] < norms["clip_0.01"][0] < norms["clip_0.1"][0]
  # The penalty's critic keeps the gradient within a few orders of magnitude from layer to layer.
  assert max(norms["gp"]) < 1e3 * min(norms["gp"])
  gp, clipped = settings["per_setting"]["gp"], settings["per_setting"]["clip_0.01"]
  assert abs(gp["input_gradient_norm_interpolates"] - 1) < abs(clipped["input_gradient_norm_interpolates"] - 1)
