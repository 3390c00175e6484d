r"""Trains one config under several objectives (or several named variants of it), evaluates each on the same samples
count against the same reference, and writes one table and one figure: the TF2 tutorial's comparison, an ablation.

  python -m experiments.compare --config experiments/configs/celeba32.py \
      --objectives wgan_clip,wgan_gp_whole_batch,wgan_gp --workdir runs/compare [--num_samples 2000] \
      [--config.num_steps=1000 ...]
  python -m experiments.compare --config experiments/configs/celeba32.py \
      --variants experiments/configs/celeba32_ablations.py --workdir runs/ablations
  python -m experiments.compare --config experiments/configs/celeba32.py \
      --objectives wgan_clip,wgan_gp_whole_batch,wgan_gp --seeds 0,1,2 --workdir runs/tutorial_comparison \
      --num_samples 10000

``--variants FILE`` names a Python file whose ``get_variants()`` returns ``{name: {"group.key": value, ...}}``: each
variant is the config with those keys set (its own ``num_steps`` too, so variants of different cost can share a
wall-time budget), trained in ``WORKDIR/<name>``; it replaces ``--objectives``.

Each objective trains in ``WORKDIR/<objective>`` with ``python -m experiments.train`` (so a stopped comparison resumes
where it stopped), with the optimizer of its own paper where it has one (``objectives.RECOMMENDED_OPTIMIZERS``: the
original WGAN's RMSProp at 5e-5, DCGAN's Adam(2e-4, 0.5, 0.999) for ``ns``) unless ``--nopaper_optimizers``;
``--config.*`` overrides apply to every objective (after those). Each run is then evaluated with
``python -m experiments.evaluate`` (FID, KID, precision/recall on ``--num_samples`` samples against the config's
images, sampled from the EMA where the config keeps one), and the real-vs-real floor at the same N is measured beside
them. Writes ``WORKDIR/comparison.md``, ``comparison.json`` and ``comparison.png`` (a grid of samples per objective,
side by side).

``--seeds 0,1,2`` trains each objective (or variant) once per seed, in ``WORKDIR/<name>/seed_<seed>`` with
``config.seed`` set to it (the initialisation, the data order and every step's randomness), seed by seed (every
objective's first seed, then every objective's second, ...); the table then adds each objective's mean FID and KID
over its seeds with their standard deviation, and the figure shows each objective's first seed.
"""

import json
import os
import pathlib
import runpy
import statistics
import sys

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from experiments import cli, subruns
from wgan_gp_jax import configuration, objectives
from wgan_gp_jax.data import images
from wgan_gp_jax.runner import host
from wgan_gp_jax.names import unknown_name_message

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the comparison: one run per objective inside.")
_OBJECTIVES = flags.DEFINE_list("objectives", ["wgan_clip", "wgan_gp_whole_batch", "wgan_gp"],
                                f"Objectives to compare, among {', '.join(objectives.OBJECTIVES)}.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 2000, "Samples per evaluation (FID depends on it).", lower_bound=2)
_METRICS = flags.DEFINE_list("metrics", ["fid", "kid", "pr"], "Metrics of experiments.evaluate.")
_VARIANTS = flags.DEFINE_string("variants", None, "Python file whose get_variants() returns {name: {'group.key':"
                                 " value}}: compare these variants of the config instead of --objectives.")
_PAPER_OPTIMIZERS = flags.DEFINE_bool("paper_optimizers", True, "Train each objective with its own paper's optimizer"
                                      " (objectives.RECOMMENDED_OPTIMIZERS).")
_GRID = flags.DEFINE_integer("grid_samples", 36, "Samples per objective in the figure.")
_SEEDS = flags.DEFINE_list("seeds", [], "Train each objective or variant once per seed (config.seed), in"
                           " WORKDIR/<name>/seed_<seed>; default: once, with the config's seed, in WORKDIR/<name>.")
flags.mark_flags_as_required(["config", "workdir"])

_TIMING_FILE = "compare_train_seconds.json"


def _config_overrides(argv: list[str]) -> list[str]:
  return [arg for arg in argv if arg.startswith("--config.")]


def load_variants(path: str, config: ml_collections.ConfigDict) -> dict[str, dict[str, object]]:
  """``get_variants()`` of the file at ``path``, each checked against ``config``'s keys; exits with one line if not."""
  if not os.path.isfile(path):
    cli.fail(f"--variants: no file {path!r}")
  try:
    variants = runpy.run_path(path)["get_variants"]()
  except Exception as error:  # a user's file may raise anything
    cli.fail(f"--variants: cannot load {path}: {type(error).__name__}: {error}")
  if not variants:
    cli.fail(f"--variants: {path} gives no variants")
  for name, settings in variants.items():
    if not name or "/" in name or name in (".", ".."):
      cli.fail(f"--variants: {name!r} cannot name a run directory")
    try:
      configuration.override(config, settings)
    except configuration.ConfigError as error:
      cli.fail(f"--variants: variant {name!r}: {error}")
  return variants


def _settings_text(settings: dict[str, object]) -> str:
  return ", ".join(f"{key}={value}" for key, value in settings.items() if key != "num_steps") or "as configured"


def _train(config_file: str, workdir: pathlib.Path, flags_: list[str], num_steps: int) -> float:
  """Trains (or resumes) one run to ``num_steps`` with ``experiments.train``; the training wall time over all its
  starts."""
  return subruns.train_once(
      workdir, num_steps,
      lambda: subruns.run_module("experiments.train", f"--config={config_file}", f"--workdir={workdir}", *flags_),
      timing_file=_TIMING_FILE)["seconds"]


_METRIC_KEYS = ("fid", "kid", "kid_std", "precision", "recall", "swd")


def _floor_samples(reference: str | None, num_samples: int) -> int:
  """The real-vs-real floor's N: ``num_samples``, or half the reference folder's images where it has fewer than
  twice as many (the floor compares two disjoint halves)."""
  if reference is None:
    return num_samples
  with images.ImageSource.open(reference) as source:
    return min(num_samples, len(source.names) // 2)


def _seed_value(text: str) -> int:
  try:
    return int(text)
  except ValueError:
    cli.fail(f"--seeds: {text!r} is not an integer")


def seed_summary(rows: list[dict]) -> list[dict]:
  """Per name, in the rows' order: its ``seeds`` and the mean and standard deviation over them (``ddof=1``; 0 for one
  seed) of each metric every one of its rows has."""
  names = list(dict.fromkeys(row["name"] for row in rows))
  summary = []
  for name in names:
    runs = [row for row in rows if row["name"] == name]
    entry = {"name": name, "seeds": [row["seed"] for row in runs]}
    for key in ("fid", "held_out_fid", "kid", "precision", "recall", "swd"):
      values = [row.get(key) for row in runs]
      if all(value is not None for value in values):
        entry[f"{key}_mean"] = statistics.fmean(values)
        entry[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    summary.append(entry)
  return summary


def _mean_and_spread(entry: dict, key: str, digits: int) -> str:
  if f"{key}_mean" not in entry:
    return ""
  return f"{entry[key + '_mean']:.{digits}f} ± {entry[key + '_std']:.{digits}f}"


def markdown_table(rows: list[dict], floor: dict | None, num_samples: int, *, label: str = "objective",
                   settings: str = "optimizer", summary: list[dict] | None = None) -> str:
  """One line per run (a seed column where ``summary`` is given), the floor, and ``summary``'s means."""
  with_swd = any(row.get("swd") is not None for row in rows)
  seed_header = ["seed"] if summary is not None else []
  header = [label, *seed_header, settings, "generator steps", "training wall time", f"FID ({num_samples:,} samples)",
            "KID", "precision", "recall"] + (["SWD x1e3"] if with_swd else [])
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for row in rows:
    seed_cell = [str(row["seed"])] if summary is not None else []
    cells = [f"`{row['name']}`", *seed_cell, row["settings"], f"{row['steps']:,}", f"{row['train_minutes']:.1f} min",
             *subruns.metric_cells(row, with_swd)]
    lines.append("| " + " | ".join(cells) + " |")
  if floor is not None:
    floor_n = floor.get("num_samples", num_samples)
    cells = [f"real vs real ({floor_n:,} vs {floor_n:,})", *([""] * len(seed_header)), "", "", "",
             *subruns.metric_cells(floor, with_swd)]
    lines.append("| " + " | ".join(cells) + " |")
  if summary is not None:
    lines += ["", f"| {label} | seeds | FID mean ± sd | FID vs held-out mean ± sd | KID mean ± sd |",
              "|---|---|---|---|---|"]
    for entry in summary:
      cells = [_mean_and_spread(entry, "fid", 1), _mean_and_spread(entry, "held_out_fid", 1),
               _mean_and_spread(entry, "kid", 4)]
      lines.append(f"| `{entry['name']}` | {', '.join(map(str, entry['seeds']))} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _figure(rows: list[dict], path: pathlib.Path, num: int) -> None:
  from wgan_gp_jax.runner import experiment, plotting

  panels = []
  first_of_each = {}
  for row in rows:
    first_of_each.setdefault(row["name"], row)
  for row in first_of_each.values():
    seed = f" (seed {row['seed']})" if "seed" in row else ""
    title = row["name"] + seed + (f"\nFID {row['fid']:.1f}" if row.get("fid") is not None else "")
    panels.append((title, experiment.load_run(row["workdir"]).sample(num, seed=0)))
  plotting.save_labelled_grids(path, panels)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  user_overrides = _config_overrides(sys.argv)
  if _VARIANTS.value:
    variants = load_variants(_VARIANTS.value, _CONFIG.value)
    label, settings_label = "variant", "settings"
  else:
    unknown = [name for name in _OBJECTIVES.value if name not in objectives.OBJECTIVES]
    if unknown:
      cli.fail("--objectives: " + unknown_name_message("objective", unknown[0], objectives.OBJECTIVES))
    variants = {name: objectives.objective_settings(name, paper_optimizer=_PAPER_OPTIMIZERS.value)
                for name in _OBJECTIVES.value}
    label, settings_label = "objective", "optimizer"
  workdir = pathlib.Path(_WORKDIR.value).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  config_file = cli.flag_value(sys.argv, "config")
  metrics = ",".join(_METRICS.value)
  evaluate_args = [f"--metrics={metrics}", f"--num_samples={_NUM_SAMPLES.value}"]

  seeds = [_seed_value(seed) for seed in _SEEDS.value]
  rows = []
  for seed in seeds or [None]:
    for name, settings in variants.items():
      run_dir = workdir / name if seed is None else workdir / name / f"seed_{seed}"
      # The command line's overrides come after the variant's, so they win (num_steps included).
      num_steps = configuration.override(_CONFIG.value, settings).num_steps
      if any(flag.startswith("--config.num_steps=") for flag in user_overrides):
        num_steps = _CONFIG.value.num_steps
      run_flags = [f"--config.{key}={value}" for key, value in settings.items()] + user_overrides
      if seed is not None:
        run_flags.append(f"--config.seed={seed}")
      seconds = _train(config_file, run_dir, run_flags, num_steps)
      config = subruns.run_config(run_dir)
      results = subruns.evaluate_once(run_dir, *evaluate_args)
      rows.append({
          "name": name, **({} if seed is None else {"seed": seed}),
          "settings": subruns.optimizer_text(config) if label == "objective" else _settings_text(settings),
          "overrides": settings, "steps": results.get("step", config.num_steps),
          "train_minutes": seconds / 60, "train_seconds": seconds, "workdir": str(run_dir),
          "generator": results.get("generator"),
          "held_out_fid": results.get("held_out", {}).get("fid"),
          **{key: results.get(key) for key in _METRIC_KEYS}})
  summary = seed_summary(rows) if seeds else None
  floor = None
  if config.kind == "image":
    reference = config.data.image_folder or None
    floor_args = ["--real_floor", f"--resolution={config.data.resolution}", f"--crop={config.data.crop}",
                  f"--metrics={metrics}", f"--num_samples={_floor_samples(reference, _NUM_SAMPLES.value)}",
                  *([f"--reference={reference}"] if reference else [])]
    floor = subruns.evaluate_once(workdir / "real_floor", *floor_args)

  machine = f"{host.cpu_model()}, {os.cpu_count()} cores"
  table = markdown_table(rows, floor, _NUM_SAMPLES.value, label=label, settings=settings_label, summary=summary)
  base = _CONFIG.value
  (workdir / "comparison.md").write_text(
      f"{table}\n{config_file} ({base.model.name} {base.data.resolution}px width {base.model.width}, batch"
      f" {base.batch_size}, n_critic {base.n_critic}) with each row's settings; {machine}.\n")
  (workdir / "comparison.json").write_text(json.dumps(
      {"rows": rows, **({} if summary is None else {"seed_summary": summary}), "real_floor": floor,
       "num_samples": _NUM_SAMPLES.value, "machine": machine,
       "config_file": config_file, "variants_file": _VARIANTS.value, "overrides": user_overrides},
      indent=2, default=str) + "\n")
  _figure(rows, workdir / "comparison.png", _GRID.value)
  print(table)
  print(f"wrote {workdir / 'comparison.md'}, comparison.json and comparison.png")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
