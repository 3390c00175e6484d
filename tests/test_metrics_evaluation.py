"""Reference-feature caching, the evaluation of a run (image and toy) and the evaluate CLI.

The Inception network is replaced by a cheap deterministic feature map here (its port is tested in
test_inception.py); what is tested is the plumbing: cache keys and locations, metric selection,
and the run interface ``.config`` / ``.sample(num, seed)``.
"""

import json
import pathlib
import subprocess
import sys
import types

import ml_collections
import numpy as np
import pytest
from PIL import Image

from wgan_gp_jax import toy_data
from wgan_gp_jax.data import images as images_lib
from wgan_gp_jax.metrics import evaluation, inception, memorisation, reference
from wgan_gp_jax.runner import plotting

FAKE_PARAMS = types.SimpleNamespace(source="fake_weights.npz", has_logits=False)


@pytest.fixture
def fake_inception(monkeypatch):
  """Features = 2x2 block means of the pixels (12-d); records how many images went through."""
  calls = []

  def features(images, *, params, batch_size=50, preprocessing="pytorch_fid", with_logits=False, kernels="auto"):
    x = np.asarray(images, np.float32)
    n, h, w, c = x.shape
    calls.append(n)
    return {"pool3": x.reshape(n, 2, h // 2, 2, w // 2, c).mean(axis=(2, 4)).reshape(n, -1)}

  monkeypatch.setattr(inception, "inception_features", features)
  monkeypatch.setattr(inception, "load_inception", lambda weights=None, cache=None: FAKE_PARAMS)
  return calls


@pytest.fixture
def image_folder(tmp_path):
  folder = tmp_path / "data" / "faces"
  folder.mkdir(parents=True)
  rng = np.random.default_rng(0)
  for i in range(64):
    base = rng.uniform(0, 255, (1, 1, 3))
    pixels = np.clip(base + rng.normal(0, 30, (20, 20, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(folder / f"{i:03d}.png")
  return folder


def test_reference_features_are_cached_next_to_writable_data(image_folder, tmp_path, fake_inception):
  kw = dict(params=FAKE_PARAMS, resolution=16, crop=1.0, cache=tmp_path / "cache")
  first = reference.reference_features(image_folder, split="0:40", **kw)
  assert first.path.parent == image_folder.parent / "reference_stats"
  assert first.features.shape == (40, 12) and first.seconds > 0 and fake_inception == [40]
  again = reference.reference_features(image_folder, split="0:40", **kw)
  assert again.seconds == 0.0 and fake_inception == [40]  # Read back, not recomputed.
  np.testing.assert_array_equal(again.features, first.features)
  np.testing.assert_array_equal(again.sigma, first.sigma)
  other = reference.reference_features(image_folder, split="40:64", **kw)  # Another key.
  assert other.path != first.path and fake_inception == [40, 24]
  at_32 = reference.reference_features(image_folder, split="0:40", **{**kw, "resolution": 32})
  assert at_32.path != first.path and at_32.key["resolution"] == 32


def test_a_split_is_sliced_from_the_cached_whole_folder(image_folder, tmp_path, fake_inception):
  kw = dict(params=FAKE_PARAMS, resolution=16, crop=1.0, cache=tmp_path / "cache")
  whole = reference.reference_features(image_folder, **kw)
  assert fake_inception == [64]
  part = reference.reference_features(image_folder, split="10:30", **kw)
  assert fake_inception == [64] and part.seconds == 0.0  # No network call.
  assert part.key["split"] == "10:30" and part.path == whole.path
  np.testing.assert_array_equal(part.features, whole.features[10:30])
  np.testing.assert_allclose(part.mu, part.features.mean(axis=0), rtol=1e-6)
  with pytest.raises(ValueError, match="split"):
    reference.reference_features(image_folder, split="50:70", **kw)  # Beyond the 64 images.


def test_reference_features_fall_back_to_cache_for_read_only_data(image_folder, tmp_path, fake_inception):
  data_root = image_folder.parent
  data_root.chmod(0o555)  # Read-only by its bits; root could still write, and must not.
  try:
    ref = reference.reference_features(image_folder, params=FAKE_PARAMS, resolution=16, crop=1.0,
                                       cache=tmp_path / "cache")
  finally:
    data_root.chmod(0o755)
  assert ref.path.parent == tmp_path / "cache" / "reference_stats"
  assert not (data_root / "reference_stats").exists()
  assert ref.key["split"] == "all" and len(ref.features) == 64


def test_parse_split_refuses_bad_ranges():
  assert reference.parse_split("10:20", 30) == slice(10, 20)
  for bad in ("5", "20:10", "0:31", "a:b"):
    with pytest.raises(ValueError, match="split"):
      reference.parse_split(bad, 30)


def _image_run(folder, images):
  config = ml_collections.ConfigDict(dict(kind="image", seed=0, num_steps=1, batch_size=8, data=dict(
      resolution=16, channels=3, crop=1.0, image_folder=str(folder))))
  return types.SimpleNamespace(config=config, sample=lambda num, seed: images[:num])


def test_evaluate_run_of_a_generator_that_returns_real_images_scores_like_real_data(
    image_folder, tmp_path, fake_inception):
  real = images_lib.load_folder_images(image_folder, resolution=16, crop=1.0)
  results = evaluation.evaluate_run(_image_run(image_folder, real), metrics=["fid", "kid", "pr", "swd"],
                                  num_samples=64, reference=image_folder, cache=str(tmp_path / "cache"))
  assert results["mode"] == "image" and results["num_real"] == 64 and results["num_fake"] == 64
  assert abs(results["fid"]) < 1e-6 and results["precision"] == results["recall"] == 1.0
  assert np.isfinite(results["kid"]) and np.isfinite(results["swd"])
  assert set(results["timings"]) >= {"inception_features", "fid", "kid", "pr", "swd", "sampling"}

  noise = np.random.default_rng(1).integers(0, 256, real.shape).astype(np.uint8)
  worse = evaluation.evaluate_run(_image_run(image_folder, noise), metrics=["fid", "swd"],
                                num_samples=64, reference=image_folder, cache=str(tmp_path / "cache"))
  assert worse["fid"] > 100 * max(results["fid"], 1e-3) and worse["swd"] > results["swd"]


def test_a_run_with_held_out_images_is_scored_against_both_sets_and_checked_for_memorisation(
    image_folder, tmp_path, fake_inception):
  real = images_lib.load_folder_images(image_folder, resolution=16, crop=1.0)  # 64 images: 48 trained, 16 held out
  kw = dict(metrics=["fid", "kid"], num_samples=48, reference=image_folder, held_out=16, cache=str(tmp_path / "c"))
  copier = evaluation.evaluate_run(_image_run(image_folder, real[:48]), **kw)  # returns its training images
  assert (copier["reference_split"], copier["held_out_split"]) == ("0:48", "48:64")
  assert copier["num_real"] == 48 and copier["held_out"]["num_real"] == 16
  assert abs(copier["fid"]) < 1e-6  # against the training images: perfect
  # Against the held-out images the copier scores what the training images themselves score there: the floor.
  np.testing.assert_allclose(copier["held_out"]["fid"], copier["held_out_floor"]["fid"], rtol=1e-6)
  copies = copier["memorisation"]
  assert copies["sample_distance"]["median"] == 0.0 and copies["samples_below_held_out_q01"] == 1.0
  assert all(pair["training_index"] == pair["index"] for pair in copies["closest_samples"])

  # A generator of new faces (here: the held-out faces themselves, 3 times) is no nearer the training faces than they.
  fresh = evaluation.evaluate_run(_image_run(image_folder, np.concatenate([real[48:]] * 3)), **kw)
  for quantile in ("min", "median"):  # the same distances, three times over
    assert fresh["memorisation"]["sample_distance"][quantile] == fresh["memorisation"]["held_out_distance"][quantile]
  assert fresh["memorisation"]["samples_below_held_out_q01"] <= 1 / 16  # at most the nearest of the 16 held-out faces
  # The copier is the better model of the training faces, the generator of new faces the better of the held-out ones.
  assert copier["fid"] < fresh["fid"] and fresh["held_out"]["fid"] < copier["held_out"]["fid"]

  # The memorisation picture's panels are the pairs the report names: the copier's samples are their training faces.
  (_, copied), (_, their_training), (_, held), (_, held_training) = evaluation.closest_pairs(
      _image_run(image_folder, real[:48]), copier)
  pairs = copier["memorisation"]
  np.testing.assert_array_equal(copied, their_training)
  np.testing.assert_array_equal(copied, real[[pair["training_index"] for pair in pairs["closest_samples"]]])
  np.testing.assert_array_equal(held, real[[48 + pair["index"] for pair in pairs["closest_held_out"]]])
  np.testing.assert_array_equal(held_training, real[[pair["training_index"] for pair in pairs["closest_held_out"]]])
  panels = evaluation.closest_pairs(_image_run(image_folder, np.concatenate([real[48:]] * 3)), fresh)
  np.testing.assert_array_equal(panels[0][1][0], panels[2][1][0])  # the nearest new face is the nearest held-out one
  plotting.save_labelled_grids(tmp_path / "pairs.png", panels)
  assert (tmp_path / "pairs.png").read_bytes()[:4] == b"\x89PNG"
  with pytest.raises(ValueError, match="no 'memorisation'"):
    evaluation.closest_pairs(_image_run(image_folder, real), evaluation.evaluate_run(
        _image_run(image_folder, real), **{**kw, "held_out": 0}))
  with pytest.raises(ValueError, match="reference_split must be 'all'"):
    evaluation.evaluate_run(_image_run(image_folder, real), **kw, reference_split="0:32")
  with pytest.raises(ValueError, match="must keep out some but not all of the 64 images"):
    evaluation.evaluate_run(_image_run(image_folder, real), **{**kw, "held_out": 64})


def test_nearest_neighbours_are_the_brute_force_ones():
  rng = np.random.default_rng(0)
  queries, references = rng.normal(size=(300, 7)), rng.normal(size=(50, 7))
  distances, indices = memorisation.nearest_neighbours(queries, references, batch_size=64)
  brute = np.linalg.norm(queries[:, None, :] - references[None, :, :], axis=-1)
  np.testing.assert_array_equal(indices, brute.argmin(axis=1))
  np.testing.assert_allclose(distances, brute.min(axis=1), rtol=1e-9)
  with pytest.raises(ValueError, match=r"\(N, D\) and \(M, D\)"):
    memorisation.nearest_neighbours(queries, references[:, :3])


def test_evaluate_run_without_weights_still_reports_swd(image_folder, tmp_path, monkeypatch):
  def unavailable(weights=None, cache=None):
    raise RuntimeError("no package index")
  monkeypatch.setattr(inception, "load_inception", unavailable)
  real = images_lib.load_folder_images(image_folder, resolution=16, crop=1.0)
  results = evaluation.evaluate_run(_image_run(image_folder, real), metrics=["fid", "swd"],
                                  num_samples=32, reference=image_folder, cache=str(tmp_path / "cache"))
  assert "no package index" in results["inception_unavailable"]
  assert "fid" not in results and np.isfinite(results["swd"])


def test_evaluate_run_of_perfect_and_collapsed_toy_generators():
  import jax
  config = ml_collections.ConfigDict(dict(kind="toy", seed=0, data=dict(toy_dataset="8gaussians")))
  def toy_run(keep):
    def sample(num, seed):
      x = np.asarray(toy_data.sample("8gaussians", jax.random.key(seed + 7), 4 * num))
      return x[keep(x)][:num]
    return types.SimpleNamespace(config=config, sample=sample)
  perfect = evaluation.evaluate_run(toy_run(lambda x: np.ones(len(x), bool)), metrics=[], num_samples=500)
  assert perfect["modes_covered"] == 8 and perfect["high_quality_fraction"] > 0.97
  collapsed = evaluation.evaluate_run(toy_run(lambda x: x[:, 0] > 0.1), metrics=[], num_samples=500)
  assert collapsed["modes_covered"] == 3 and collapsed["high_quality_fraction"] > 0.97
  # Finite-sample W1 of a perfect generator is ~0.15 here (mode proportions fluctuate); moving 5/8 of
  # the mass to other modes costs far more.
  assert perfect["w1"] < 0.25 and collapsed["w1"] > 3 * perfect["w1"]


def test_cli_real_floor_with_swd_writes_json(shared_data, tmp_path):
  out = subprocess.run(
    [sys.executable, "-m", "experiments.evaluate", f"--workdir={tmp_path}", "--real_floor",
     "--metrics=swd", "--num_samples=32", "--resolution=32", f"--cache_dir={tmp_path / 'cache'}"],
    capture_output=True, text=True, cwd=pathlib.Path(__file__).resolve().parents[1], timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  results = json.loads((tmp_path / "evaluation.json").read_text())
  assert results["mode"] == "real_floor" and results["splits"] == ["0:32", "32:64"]
  assert results["swd"] > 0 and "fid" not in results
  assert "swd" in out.stdout


def test_real_floor_caches_both_halves_and_reruns_without_the_network(image_folder, tmp_path, fake_inception):
  kw = dict(metrics=["fid", "kid", "pr", "swd"], num_samples=32, resolution=16, crop=1.0,
            reference=str(image_folder), cache=str(tmp_path / "cache"))
  first = evaluation.real_floor(**kw)
  assert fake_inception == [32, 32] and first["splits"] == ["0:32", "32:64"]
  assert first["fid"] > 0 and 0 < first["precision"] <= 1 and first["inception_images_per_second"] > 0
  again = evaluation.real_floor(**kw)
  assert fake_inception == [32, 32]  # Both halves read back from the cache.
  assert again["fid"] == first["fid"] and again["kid"] == first["kid"] and again["swd"] == first["swd"]
