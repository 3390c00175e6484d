r"""The WGAN-GP paper's robustness experiment (Gulrajani et al. 2017, section 5.2, Figure 2, Appendix H): every
architecture trained with every objective, each objective with one set of hyperparameters for all architectures, on
the same faces, with the same budget of generator steps; then FID and KID of every cell.

  python -m experiments.architecture_grid --workdir runs/architectures [--resolution 32] [--steps 500] \
      [--architectures dcgan,gated] [--objectives ns,wgan_gp] [--fid_samples 2000] [--no_fid]

Architectures (``--architectures``, rows of the table and the figure): ``paper_architectures.ARCHITECTURES``
(``dcgan``, ``g_no_bn``, ``g_mlp``, ``no_norm``, ``gated``, ``tanh``, ``resnet101``; ``models.paper_architectures``
says how each follows the authors' ``gan_64x64.py``). Objectives (``--objectives``, columns): ``ns`` (DCGAN's loss),
``lsgan``, ``wgan_clip``, ``wgan_gp``, each with the optimizer and critic updates of ``objectives.ROBUSTNESS_SETTINGS``
(the paper's Appendix E). The critic's normalisation is the paper's: layer norm with WGAN-GP's penalty, batch norm
(batch statistics) with the others, none in ``no_norm`` (``paper_architectures.paper_critic_norm``). Everything else is
the paper's DCGAN setting: batch 64, 128-dimensional latents, float32, no EMA, no augmentation.

Each cell trains in ``WORKDIR/<architecture>__<objective>`` with ``runner.experiment.train_and_evaluate`` for
``--steps`` generator steps, so a stopped grid resumes where it stopped and a finished cell is skipped (its training
time is recorded in ``architecture_grid_train_seconds.json``). A cell whose losses or weights become NaN or infinite
stops there and is recorded as diverged (``architecture_grid_divergence.json``; it is not trained again). Each finished
cell is then evaluated with ``python -m experiments.evaluate`` (FID and KID of ``--fid_samples`` samples against all
the training images, upsampled to 299 for the FID Inception network), and the real-vs-real floor at the same N
(``WORKDIR/real_floor``: images [0, N) against [N, 2N)); ``--no_fid`` skips every evaluation. Every cell's
``sample_spread`` (``metrics.spread``: 500 samples' pixel spread over that of the first 500 training images, or of
``--reference``'s; about 0 for a collapsed generator, 1 for real faces) needs no Inception and is always measured.
Writes ``WORKDIR/architecture_robustness.json`` (one record per cell: ``architecture``, ``objective``,
``generator_steps``, ``train_seconds``, ``fid``, ``fid_samples``, ``kid``, ``cpu``, ``commit``, ``sample_spread`` and
the settings), the tables
``architecture_robustness.md`` and the picture ``architecture_robustness.png`` (the paper's Figure 2: a grid of samples
per cell, rows architectures, columns objectives).

Each cell's config is ``experiments/configs/robustness_cell.py``'s ``cell_config`` (one cell also trains alone with
``experiments.train``). Defaults are sized for a CPU at 32x32: ``--resolution 32`` reads the shared CelebA faces
(``../shared/data/celeba_10k/images``, as ``experiments/configs/celeba32.py``), model width 32 (16 for ``resnet101``,
``robustness_cell.WIDTHS``). On an accelerator, the paper's 64x64 with width 64 (its ``DIM``) and CelebA from TFDS
(not run in this repository's CI):

  python -m experiments.architecture_grid --workdir /mnt/runs/architectures --resolution 64 --steps 100000 \
      --dataset celeb_a --data_dir gs://BUCKET/tensorflow_datasets --fid_samples 10000 \
      --reference /mnt/data/celeba_images

(``--reference``: the image folder FID compares against; default the training image folder, or the shared faces for
a TFDS dataset.)
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

import ml_collections
from absl import app, flags

from experiments import cli, subruns
from experiments.configs import robustness_cell
from wgan_gp_jax import configuration, objectives
from wgan_gp_jax.data import images
from wgan_gp_jax.metrics import spread
from wgan_gp_jax.models import paper_architectures
from wgan_gp_jax.names import unknown_name_message
from wgan_gp_jax.runner import checkpoint, experiment, host, plotting, preemption, workdir_lock

OBJECTIVE_TITLES = {"ns": "DCGAN (ns)", "lsgan": "LSGAN", "wgan_clip": "WGAN (clipping)", "wgan_gp": "WGAN-GP"}
DEFAULT_IMAGE_FOLDER = subruns.REPO.parent / "shared" / "data" / "celeba_10k" / "images"
RESULTS_NAME = "architecture_robustness"
TIMING_FILE = "architecture_grid_train_seconds.json"
DIVERGENCE_FILE = "architecture_grid_divergence.json"
# Samples of each cell, and training images, whose pixel spread (metrics.spread) the record gives: it tells a
# collapsed generator from a diverse one where FID, far above its floor, does not.
SPREAD_SAMPLES = 500
# The keys every record of architecture_robustness.json starts with; the settings of its cell follow.
RECORD_KEYS = ("architecture", "objective", "generator_steps", "train_seconds", "fid", "fid_samples", "kid", "cpu",
               "commit")

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the grid: one run per cell inside.")
_RESOLUTION = flags.DEFINE_integer("resolution", 32, "Image resolution, 4 * 2^k (32 on a CPU, 64 as the paper).")
_STEPS = flags.DEFINE_integer("steps", robustness_cell.CPU_STEPS, "Generator steps of every cell.", lower_bound=1)
_ARCHITECTURES = flags.DEFINE_list("architectures", list(paper_architectures.ARCHITECTURES),
                                   "Architectures (rows), among " + ", ".join(paper_architectures.ARCHITECTURES))
_OBJECTIVES = flags.DEFINE_list("objectives", list(robustness_cell.OBJECTIVES),
                                "Objectives (columns), among " + ", ".join(objectives.ROBUSTNESS_SETTINGS))
_FID_SAMPLES = flags.DEFINE_integer("fid_samples", 2000, "Samples per FID and KID (and images per half of the"
                                    " real-vs-real floor).", lower_bound=2)
_NO_FID = flags.DEFINE_bool("no_fid", False, "Train and draw only: no FID, KID or floor.")
_WIDTH = flags.DEFINE_integer("width", None, "Model width of every architecture (default: 32 at 32 pixels, 16 for"
                              " resnet101; 64 at other resolutions).", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Batch size (the paper's 64).", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of every cell.")
_IMAGE_FOLDER = flags.DEFINE_string("image_folder", str(DEFAULT_IMAGE_FOLDER), "Folder (or .zip) of training images.")
_DATASET = flags.DEFINE_string("dataset", "", "A TFDS dataset (celeb_a) instead of --image_folder.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory (prepared image folders are cached there).")
_REFERENCE = flags.DEFINE_string("reference", None, "Image folder FID compares against (default: --image_folder, or"
                                 " the shared faces with --dataset).")
_GRID_SAMPLES = flags.DEFINE_integer("grid_samples", 16, "Samples per cell in the figure.", lower_bound=1)
flags.mark_flags_as_required(["workdir"])


def cell_name(architecture: str, objective: str) -> str:
  """The cell's sub-directory: ``<architecture>__<objective>``."""
  return f"{architecture}__{objective}"


def _train_cell(config: ml_collections.ConfigDict, cell_dir: pathlib.Path) -> dict:
  """Trains (or resumes, or skips) one cell: ``subruns.train_once``'s record (``seconds``, ``cpu``, ``commit``) and
  ``diverged`` (the message of a non-finite run, else None)."""
  divergence = cell_dir / DIVERGENCE_FILE
  if divergence.exists():
    return json.loads(divergence.read_text())
  try:
    timing = subruns.train_once(cell_dir, config.num_steps, lambda: experiment.train_and_evaluate(config, cell_dir),
                                timing_file=TIMING_FILE)
  except experiment.NonFiniteError as error:
    record = json.loads((cell_dir / TIMING_FILE).read_text()) | {"diverged": str(error)}
    divergence.write_text(json.dumps(record) + "\n")
    return record
  return timing | {"diverged": None}


def markdown_tables(records: list[dict], floor: dict | None, *, architectures: list[str], objective_names: list[str],
                    fid_samples: int | None) -> str:
  """The FID grid (rows architectures, columns objectives) and one line per cell."""
  by_cell = {(r["architecture"], r["objective"]): r for r in records}

  def grid_cell(record: dict | None) -> str:
    if record is None:
      return ""
    if record["diverged"]:
      return "diverged"
    return subruns.format_number(record["fid"], 1) or "trained"

  metric = f"FID ({fid_samples:,} samples)" if fid_samples else "FID (not evaluated)"
  header = ["architecture"] + [f"{OBJECTIVE_TITLES.get(o, o)}" for o in objective_names]
  lines = [f"{metric}, lower is better:", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for architecture in architectures:
    cells = [grid_cell(by_cell.get((architecture, o))) for o in objective_names]
    lines.append("| " + " | ".join([f"`{architecture}`"] + cells) + " |")
  if floor is not None:
    lines += ["", f"Real vs real ({fid_samples:,} vs {fid_samples:,} training images): FID"
              f" {subruns.format_number(floor.get('fid'), 2)}, KID {subruns.kid_text(floor)}."]
  detail = ["architecture", "objective", "critic norm", "optimizer", "n_critic", "generator steps",
            "training wall time", metric, "KID", "pixel spread"]
  lines += ["", "| " + " | ".join(detail) + " |", "|" + "---|" * len(detail)]
  for record in records:
    steps = f"{record['generator_steps']:,}" if record["generator_steps"] is not None else ""
    if record["diverged"]:
      steps += " (diverged)"
    cells = [f"`{record['architecture']}`", f"`{record['objective']}`", record["critic_norm"], record["optimizer"],
             str(record["n_critic"]), steps, f"{record['train_seconds'] / 60:.1f} min",
             subruns.format_number(record["fid"], 1), subruns.kid_text(record),
             subruns.format_number(record["sample_spread"], 2)]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _last_step_and_samples(cell_dir: pathlib.Path, num: int):
  """The generator step of the cell's newest checkpoint and ``num`` samples of it (None, None without one)."""
  try:
    run = experiment.load_run(cell_dir)
  except FileNotFoundError:
    return None, None
  return int(run.state.step), run.sample(num, seed=0)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  host.keep_freed_memory()  # before the first JAX computation (as experiments.train)
  for name in _ARCHITECTURES.value:
    if name not in paper_architectures.ARCHITECTURES:
      cli.fail("--architectures: " + unknown_name_message("architecture", name, paper_architectures.ARCHITECTURES))
  for name in _OBJECTIVES.value:
    if name not in objectives.ROBUSTNESS_SETTINGS:
      cli.fail("--objectives: " + unknown_name_message("objective", name, objectives.ROBUSTNESS_SETTINGS))
  if not _DATASET.value and not os.path.exists(_IMAGE_FOLDER.value):
    cli.fail(f"--image_folder: no folder {_IMAGE_FOLDER.value!r} (or give --dataset)")
  workdir = pathlib.Path(_WORKDIR.value).absolute()
  resolution = _RESOLUTION.value
  configs = {}
  for architecture in _ARCHITECTURES.value:
    for objective in _OBJECTIVES.value:
      try:
        configs[architecture, objective] = robustness_cell.cell_config(
            architecture, objective, resolution=resolution, steps=_STEPS.value,
            width=robustness_cell.cell_width(architecture, resolution, _WIDTH.value), batch_size=_BATCH_SIZE.value,
            seed=_SEED.value, image_folder=str(pathlib.Path(_IMAGE_FOLDER.value).absolute()), dataset=_DATASET.value,
            data_dir=_DATA_DIR.value)
      except configuration.ConfigError as error:
        cli.fail(f"cell {cell_name(architecture, objective)}: {error}")
  workdir.mkdir(parents=True, exist_ok=True)
  reference = _REFERENCE.value or (None if _DATASET.value else str(pathlib.Path(_IMAGE_FOLDER.value).absolute()))
  reference_args = [f"--reference={reference}"] if reference else []
  evaluate_args = ["--metrics=fid,kid", f"--num_samples={_FID_SAMPLES.value}", *reference_args]
  commit = subruns.git_commit()
  first_config = next(iter(configs.values()))
  real_images = None if reference is None else images.load_folder_images(
      reference, resolution=resolution, crop=first_config.data.crop, channels=first_config.data.channels,
      limit=SPREAD_SAMPLES)

  records, pictures = [], {}
  try:
    for (architecture, objective), config in configs.items():
      cell_dir = workdir / cell_name(architecture, objective)
      print(f"cell {cell_dir.name}: {config.num_steps:,} generator steps", flush=True)
      trained = _train_cell(config, cell_dir)
      step, samples = _last_step_and_samples(cell_dir, max(_GRID_SAMPLES.value, SPREAD_SAMPLES))
      results = {}
      if not _NO_FID.value and not trained["diverged"]:
        results = subruns.evaluate_once(cell_dir, *evaluate_args)
      pictures[architecture, objective] = None if samples is None else samples[:_GRID_SAMPLES.value]
      sample_spread = None if samples is None or real_images is None else spread.spread_ratio(
          samples[:SPREAD_SAMPLES], real_images)
      values = {
          "architecture": architecture, "objective": objective, "generator_steps": step,
          "train_seconds": trained["seconds"], "fid": results.get("fid"),
          "fid_samples": None if _NO_FID.value or trained["diverged"] else _FID_SAMPLES.value,
          "kid": results.get("kid"), "cpu": trained.get("cpu"), "commit": trained.get("commit")}
      records.append({key: values[key] for key in RECORD_KEYS} | {
          "kid_std": results.get("kid_std"), "sample_spread": sample_spread, "spread_samples": SPREAD_SAMPLES,
          "diverged": trained["diverged"], "critic_norm": config.model.critic_norm,
          "optimizer": subruns.optimizer_text(config), "n_critic": config.n_critic, "width": config.model.width,
          "resolution": resolution, "batch_size": config.batch_size, "workdir": str(cell_dir)})
      print(f"cell {cell_dir.name}: {trained['seconds'] / 60:.1f} min of training, FID {results.get('fid')}",
            flush=True)
  except preemption.RunInterrupted as stop:
    print(stop, file=sys.stderr)
    sys.exit(stop.exit_status)
  except (checkpoint.ConfigMismatchError, checkpoint.CheckpointError, workdir_lock.WorkdirLocked) as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(1)

  floor = None
  if not _NO_FID.value:
    floor = subruns.evaluate_once(workdir / "real_floor", "--real_floor", f"--resolution={resolution}",
                                  f"--crop={first_config.data.crop}", *evaluate_args)
  fid_samples = None if _NO_FID.value else _FID_SAMPLES.value
  tables = markdown_tables(records, floor, architectures=_ARCHITECTURES.value, objective_names=_OBJECTIVES.value,
                           fid_samples=fid_samples)
  cpus = sorted({part for r in records if r["cpu"] for part in r["cpu"].split(" + ")})
  machine = f"{' + '.join(cpus) or host.cpu_description()}, {os.cpu_count()} cores"
  (workdir / f"{RESULTS_NAME}.md").write_text(
      f"{tables}\n{resolution}x{resolution}, {_STEPS.value:,} generator steps per cell, batch {_BATCH_SIZE.value};"
      f" {machine}; commit {commit}.\n")
  (workdir / f"{RESULTS_NAME}.json").write_text(json.dumps(
      {"cells": records, "real_floor": floor, "resolution": resolution, "steps": _STEPS.value,
       "fid_samples": fid_samples, "machine": machine, "commit": commit}, indent=2, default=str) + "\n")
  cells = []
  for architecture in _ARCHITECTURES.value:
    row = []
    for objective in _OBJECTIVES.value:
      record = next(r for r in records if (r["architecture"], r["objective"]) == (architecture, objective))
      samples = pictures[architecture, objective]
      caption = "diverged" if record["diverged"] else (
          f"FID {record['fid']:.1f}" if record["fid"] is not None else f"step {record['generator_steps']:,}")
      row.append(None if samples is None else (caption, samples))
    cells.append(row)
  plotting.save_labelled_grid_table(workdir / f"{RESULTS_NAME}.png", _ARCHITECTURES.value,
                                    [OBJECTIVE_TITLES.get(o, o) for o in _OBJECTIVES.value], cells)
  print(tables)
  print(f"wrote {workdir / RESULTS_NAME}.md, .json and .png")


if __name__ == "__main__":
  cli.run(main)
