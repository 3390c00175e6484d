"""The experiment config: every key with its default, and the checks of a whole config before anything is built or
compiled.

A config (``default_config`` lists every key with its default) is a few top-level keys (what the training loop
itself needs) and one group per part of the system, each read by one module only, so that every choice is a one-line
change (``--config.objective.name=wgan_clip``):

==============  ==========================================================================================
``model``       ``wgan_gp_jax.models.build_models``: architecture, width, latent size, critic layer norm, dtype
``data``        ``wgan_gp_jax.data``: the dataset, resolution, channels, crop and flips (toy: the distribution)
``objective``   ``wgan_gp_jax.objectives``: the critic and generator losses and their hyperparameters
``critic``      ``wgan_gp_jax.optimizers``: the critic's optimizer (name and hyperparameters)
``generator``   ``wgan_gp_jax.optimizers``: the generator's optimizer (TTUR: its own learning rate)
``ema``         ``wgan_gp_jax.train.EMA``: the generator's exponential moving average
``augment``     ``wgan_gp_jax.augment``: DiffAugment on everything the critic sees
``logging``     ``wgan_gp_jax.runner.experiment``: metric lines and pictures
``checkpoint``    ``wgan_gp_jax.runner.checkpoint``: how often to save, how many to keep
``evaluation``    ``wgan_gp_jax.runner.periodic_eval``: FID while training, its cost bounded
==============  ==========================================================================================

``validate`` refuses an unknown key, naming the nearest valid one, and any value that cannot make a run, in one line
(``ConfigError``). Each group's values are checked by the module that builds it (``objectives``, ``optimizers``,
``augment``, ``train.EMA``, ``models``), once, in ``training_parts``; this module adds the keys of the training loop.
"""

import dataclasses
from typing import Any, Iterable, Mapping, MutableMapping

import ml_collections

from wgan_gp_jax import augment, objectives, optimizers, train
from wgan_gp_jax.models import KERNEL_CHOICES, MODELS, compute_dtype, critic_normalization, dcgan
from wgan_gp_jax.names import unknown_name_message

KINDS = ("toy", "image")


class ConfigError(ValueError):
  """A config value that cannot make a run; the message is one line naming the key."""


def dotted_items(tree: Mapping[str, Any] | ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
  """Every leaf of a nested config (a ``ConfigDict`` or its JSON) under its dotted key: ``{"group.key": value}``."""
  items = {}
  for key, value in tree.items():
    if isinstance(value, (Mapping, ml_collections.ConfigDict)):
      items.update(dotted_items(value, f"{prefix}{key}."))
    else:
      items[f"{prefix}{key}"] = value
  return items


def set_dotted(tree: MutableMapping[str, Any] | ml_collections.ConfigDict, key: str, value: Any) -> None:
  """Sets ``tree[group][...][name] = value`` for ``key = "group....name"``, making the groups it lacks."""
  *groups, name = key.split(".")
  for part in groups:
    if part not in tree:
      tree[part] = {}
    tree = tree[part]
  tree[name] = value


def override(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A copy of ``config`` with ``{"group.key": value}`` set; an unknown key raises ``ConfigError`` naming the
  nearest."""
  config = ml_collections.ConfigDict(config.to_dict())
  valid = dotted_items(config)
  for key, value in overrides.items():
    if key not in valid:
      raise ConfigError(unknown_key_message(key, valid))
    set_dotted(config, key, value)
  return config


def unknown_key_message(key: str, valid_keys: Iterable[str]) -> str:
  """``unknown config key 'a.b'; did you mean 'a.c'?``."""
  return unknown_name_message("config key", key, valid_keys, list_valid=False)


def _named(key: str, check, value) -> None:
  """``check(value)``, its ``ValueError`` made a ``ConfigError`` that names ``key``."""
  try:
    check(value)
  except ValueError as error:
    raise ConfigError(f"{key}: {str(error).splitlines()[0]}") from error


def _check(condition: bool, message: str) -> None:
  if not condition:
    raise ConfigError(message)


def optimizer_config(*, learning_rate: float) -> ml_collections.ConfigDict:
  """One optimizer group: ``name`` is ``adam``, ``rmsprop`` or ``sgd``; keys an optimizer does not use are ignored."""
  return ml_collections.ConfigDict(dict(
      name="adam",
      learning_rate=learning_rate,
      linear_decay=False,  # fall linearly to 0 at the end of the run (the paper's CIFAR-10 ResNet runs)
      decay_start=0.0,  # with linear_decay: the fraction of the run after which the fall begins (0: from the start)
      b1=0.0, b2=0.9, eps=1e-8,  # adam
      decay=0.99,  # rmsprop: the squared-gradient average's decay (PyTorch's alpha), as in the WGAN authors' code
      momentum=0.0,  # rmsprop and sgd
  ))


def default_config(kind: str) -> ml_collections.ConfigDict:
  """Every key a config may have, with its default, for a ``toy`` (2-D points) or ``image`` run."""
  if kind not in KINDS:
    raise ConfigError(unknown_name_message("kind", kind, KINDS))
  config = ml_collections.ConfigDict()
  config.kind = kind
  config.seed = 0
  config.num_steps = 10_000  # generator iterations
  config.batch_size = 64  # global, split over all devices
  config.num_devices = 0  # 0: all devices
  config.n_critic = 5  # critic updates per generator update (Gulrajani et al. 2017)

  config.model = ml_collections.ConfigDict(dict(
      # "toy_mlp", "dcgan", "resnet", or the paper's robustness architectures "g_no_bn", "g_mlp", "no_norm",
      # "gated", "tanh", "resnet101" (wgan_gp_jax.models.paper_architectures)
      name="toy_mlp" if kind == "toy" else "dcgan",
      width=64,
      latent_dim=128,
      layer_norm=False,  # critic: layer norm over C, H, W (dcgan, and the paper's architectures)
      # The critic's normalisation: "none", "layer", "batch" (batch statistics; refused with an input-gradient
      # penalty) or "auto": the paper's rule for its robustness architectures (layer norm with a gradient penalty,
      # batch norm otherwise), model.layer_norm for dcgan, none for toy_mlp and resnet (models.critic_normalization).
      critic_norm="auto",
      # Activations and products: "float32" or "bfloat16". Parameters, optimizer states, batch-norm statistics, the
      # EMA, samples, scores, losses and penalties stay float32 (param_dtype: "float32" only; see compute_dtype).
      dtype="float32",
      param_dtype="float32",
      # How layers are computed: "auto" (the CPU kernels on XLA:CPU, plain flax.linen layers elsewhere), "xla" (plain
      # flax.linen layers and lax convolutions everywhere) or "cpu" (the CPU kernels). Parameters are the same.
      kernels="auto",
      # > 0: class-conditional (the paper's AC-GAN setting): the generator makes the class it is given and the critic
      # classifies beside scoring (models.conditional; the objective group's acgan_scale and acgan_scale_g); the data
      # must carry labels in [0, num_classes).
      num_classes=0,
  ))
  if kind == "toy":
    config.data = ml_collections.ConfigDict(dict(toy_dataset="8gaussians"))  # or "25gaussians", "swissroll"
  else:
    config.data = ml_collections.ConfigDict(dict(
        resolution=64,
        channels=3,
        dataset="",  # a TFDS name: celeb_a, mnist, fashion_mnist, cifar10
        image_folder="",  # or a folder / .zip of images, prepared into a TFDS dataset on first use
        data_dir=ml_collections.config_dict.placeholder(str),  # TFDS data dir; None: TFDS's default
        crop=160 / 178,  # CelebA protocol of Lucic et al. (2018); 1.0 for square sources
        random_flip=True,
        # The last held_out of the sorted images (or of the TFDS train split) are never trained on: experiments.evaluate
        # scores the run against them too, and checks for memorised training images.
        held_out=0,
        idx_folder="",  # or a folder of MNIST IDX files (images and labels), prepared into a TFDS dataset on first use
    ))
  # Gulrajani et al. (2017): lambda = 10, n_critic = 5, Adam(1e-4, b1 = 0, b2 = 0.9).
  config.objective = ml_collections.ConfigDict(dict(
      name="wgan_gp",  # see wgan_gp_jax.objectives.OBJECTIVES
      gp_weight=10.0,  # wgan_gp, wgan_lp, wgan_gp_whole_batch: lambda
      drift_weight=0.0,  # wgan_gp, wgan_lp: ProGAN's epsilon_drift
      clip=0.01,  # wgan_clip: every critic weight is clipped to [-clip, clip] after each update
      r1_gamma=10.0,  # ns_r1: gamma, the penalty is gamma / 2 * R1
      dragan_weight=10.0,  # dragan: lambda
      # Class-conditional runs (model.num_classes > 0; train.ClassConditioning): the weights of the auxiliary
      # classifier's cross-entropy in the critic's loss (on real images) and the generator's (on its samples), the
      # authors' ACGAN_SCALE and ACGAN_SCALE_G (gan_cifar_resnet.py).
      acgan_scale=1.0,
      acgan_scale_g=0.1,
  ))
  config.critic = optimizer_config(learning_rate=1e-4)
  config.generator = optimizer_config(learning_rate=1e-4)
  # StyleGAN2-ADA's generator EMA: the average's half-life in thousands of generator images, ramped up at the start
  # to at most rampup * (images so far); rampup <= 0 disables the ramp-up.
  config.ema = ml_collections.ConfigDict(dict(enabled=False, half_life_kimg=10.0, rampup=0.05))
  # DiffAugment (Zhao et al. 2020): comma-separated "color,translation,cutout"; "" is off.
  config.augment = ml_collections.ConfigDict(dict(policy="", translation_ratio=0.125, cutout_ratio=0.5))
  config.logging = ml_collections.ConfigDict(dict(
      log_every=100,  # generator steps between lines of metrics.jsonl
      figure_every=1000,  # generator steps between pictures
      num_fixed_samples=64,  # latents of the pictures, fixed for the run
  ))
  # Every so many generator steps; the newest `keep` are kept, and those at multiples of keep_period (0: none) too.
  # The work directory's lock (wgan_gp_jax.runner.workdir_lock) is stale after lock_stale_seconds without a heartbeat.
  config.checkpoint = ml_collections.ConfigDict(dict(every=1000, keep=3, keep_period=0, lock_stale_seconds=300.0))
  # FID while training (image runs; wgan_gp_jax.runner.periodic_eval): first at generator step `every` (0: never), then
  # at a multiple of it planned then so that evaluations take at most max_time_fraction of the run's wall time, and at
  # the last step; num_samples samples against the Inception features of evaluation.reference ("": data.image_folder).
  config.evaluation = ml_collections.ConfigDict(dict(every=0, num_samples=2000, reference="", max_time_fraction=0.15))
  return config


@dataclasses.dataclass(frozen=True)
class TrainingParts:
  """What ``train``'s iteration is made of besides the models, built from a config's groups."""
  objective: objectives.Objective  # ``objective``
  optimizers: optimizers.Optimizers  # ``critic`` and ``generator`` (with ``num_steps`` and ``n_critic``)
  augmentation: augment.Augmentation | None  # ``augment``; None when off
  ema: train.EMA | None  # ``ema``; None when off
  conditioning: train.ClassConditioning | None  # ``model.num_classes`` and the objective's ``acgan_*``; None: none


def training_parts(config: ml_collections.ConfigDict) -> TrainingParts:
  """The objective, both optimizers, the augmentation and the EMA of ``config``, each built (and checked, raising
  ``ValueError``) by the module of its group: build them once per run and hand them to ``train``."""
  ema = train.EMA(half_life_kimg=config.ema.half_life_kimg, rampup=config.ema.rampup)
  return TrainingParts(
      objective=objectives.build_objective(config.objective),
      optimizers=optimizers.build_optimizers(config),
      augmentation=augment.build_augmentation(config.augment),
      ema=ema if config.ema.enabled else None,
      conditioning=train.ClassConditioning(num_classes=config.model.num_classes,
                                           critic_scale=config.objective.acgan_scale,
                                           generator_scale=config.objective.acgan_scale_g)
      if config.model.num_classes else None,
  )


def validate(config: ml_collections.ConfigDict, *, num_devices: int | None = None) -> None:
  """Raises ``ConfigError`` (one line) for the first value that cannot make a run.

  ``num_devices``, when given, is the number of devices the batch is split over.
  """
  _check(config.get("kind") in KINDS, unknown_name_message("kind", config.get("kind"), KINDS))
  known, present = set(dotted_items(default_config(config.kind))), dotted_items(config)
  for key in present:
    _check(key in known, unknown_key_message(key, known))
  missing = sorted(known - set(present))
  _check(not missing, f"the config lacks the key {missing[0]!r}" if missing else "")
  try:
    for key in ("num_steps", "batch_size", "n_critic"):
      _check(isinstance(config[key], int) and config[key] > 0, f"{key} must be a positive integer, got {config[key]!r}")
    _check(config.num_devices >= 0, f"num_devices must be >= 0 (0: all devices), got {config.num_devices}")
    if num_devices is not None:
      _check(config.batch_size % num_devices == 0,
             f"batch_size={config.batch_size} must be divisible by the number of devices ({num_devices})")
    _check(config.model.name in MODELS, unknown_name_message("model.name", config.model.name, MODELS))
    _check(config.model.width > 0 and config.model.latent_dim > 0, "model.width and model.latent_dim must be positive")
    _check(isinstance(config.model.num_classes, int) and config.model.num_classes >= 0 and config.model.num_classes != 1,
           f"model.num_classes must be 0 (unconditional) or at least 2, got {config.model.num_classes!r}")
    _check(config.kind == "image" or not config.model.num_classes,
           "model.num_classes: toy data have no labels; class-conditional runs are image runs")
    compute_dtype(config.model)
    _check(config.model.kernels in KERNEL_CHOICES,
           unknown_name_message("model.kernels", config.model.kernels, KERNEL_CHOICES))
    _check((config.kind == "toy") == (config.model.name == "toy_mlp"),
           f"model.name={config.model.name!r} does not make {config.kind} runs: toy runs use 'toy_mlp', image runs"
           f" {', '.join(repr(name) for name in MODELS if name != 'toy_mlp')}")
    if config.kind == "image":
      _named("data.resolution", dcgan.num_resolution_doublings, config.data.resolution)
      _check(config.data.channels in (1, 3), f"data.channels must be 1 or 3, got {config.data.channels}")
      _check(isinstance(config.data.held_out, int) and config.data.held_out >= 0,
             f"data.held_out must be an integer >= 0 (0: train on every image), got {config.data.held_out!r}")
    training_parts(config)  # each group checked by the module that builds it
    critic_normalization(config)  # the critic's normalisation against the objective (batch norm: no gradient penalty)
    for key in ("log_every", "figure_every", "num_fixed_samples"):
      _check(config.logging[key] > 0, f"logging.{key} must be positive, got {config.logging[key]}")
    _check(config.checkpoint.every > 0 and config.checkpoint.keep > 0, "checkpoint.every and checkpoint.keep must be"
           f" positive, got {config.checkpoint.every} and {config.checkpoint.keep}")
    _check(config.checkpoint.lock_stale_seconds > 0,
           f"checkpoint.lock_stale_seconds must be positive, got {config.checkpoint.lock_stale_seconds}")
    _check(config.checkpoint.keep_period >= 0,
           f"checkpoint.keep_period must be >= 0 (0: none), got {config.checkpoint.keep_period}")
    _check(config.checkpoint.keep_period % config.checkpoint.every == 0,
           f"checkpoint.keep_period={config.checkpoint.keep_period} must be a multiple of checkpoint.every="
           f"{config.checkpoint.every}: only steps that are saved can be kept")
    evaluation = config.evaluation
    _check(evaluation.every >= 0, f"evaluation.every must be >= 0 (0: never), got {evaluation.every}")
    _check(evaluation.every == 0 or config.kind == "image", "evaluation.every: FID is for image runs; toy runs have"
           " none (evaluate them with experiments.evaluate)")
    _check(evaluation.num_samples >= 2, f"evaluation.num_samples must be at least 2, got {evaluation.num_samples}")
    _check(0 < evaluation.max_time_fraction <= 1,
           f"evaluation.max_time_fraction must be in (0, 1], got {evaluation.max_time_fraction}")
  except ConfigError:
    raise
  except (ValueError, TypeError) as error:
    raise ConfigError(str(error).splitlines()[0]) from error
  except (AttributeError, KeyError) as error:  # a group or key that a config file left out
    raise ConfigError(f"the config lacks a key: {error}") from error
