"""Optimizers by name, from one config group each (``config.critic``, ``config.generator``).

Separate groups give the two networks their own optimizer and learning rate (TTUR: Heusel et al., `GANs Trained by a
Two Time-Scale Update Rule Converge to a Local Nash Equilibrium <https://arxiv.org/abs/1706.08500>`_, 2017).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping, NamedTuple

import optax

from wgan_gp_jax.names import unknown_name_message

if TYPE_CHECKING:  # the core needs no ml_collections: any object with the config's attributes will do
  import ml_collections


def _adam(config: ml_collections.ConfigDict, learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
  return optax.adam(learning_rate, b1=config.b1, b2=config.b2, eps=config.eps)


def _rmsprop(config: ml_collections.ConfigDict, learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
  return optax.rmsprop(learning_rate, decay=config.decay, eps=config.eps, momentum=config.momentum or None)


def _sgd(config: ml_collections.ConfigDict, learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
  return optax.sgd(learning_rate, momentum=config.momentum or None)


OPTIMIZERS: Mapping[str, Callable[[ml_collections.ConfigDict, optax.ScalarOrSchedule],
                                  optax.GradientTransformation]] = {
    "adam": _adam,
    "rmsprop": _rmsprop,
    "sgd": _sgd,
}


def check(config: ml_collections.ConfigDict, group: str) -> None:
  """Raises ``ValueError`` naming ``group`` (``critic`` or ``generator``) for an unknown name or a bad value."""
  if config.name not in OPTIMIZERS:
    raise ValueError(unknown_name_message(f"{group}.name", config.name, list(OPTIMIZERS)))
  if not config.learning_rate > 0:
    raise ValueError(f"{group}.learning_rate must be positive, got {config.learning_rate}")
  for key, low, high in (("b1", 0.0, 1.0), ("b2", 0.0, 1.0), ("decay", 0.0, 1.0), ("momentum", 0.0, 1.0),
                         ("decay_start", 0.0, 1.0)):
    if key in config and not low <= config[key] < high:
      raise ValueError(f"{group}.{key} must be in [{low}, {high}), got {config[key]}")


def build_optimizer(config: ml_collections.ConfigDict, *, group: str, num_updates: int) -> optax.GradientTransformation:
  """The optimizer of one config group (checked, ``check``'s errors naming ``group``); with ``linear_decay`` its
  learning rate holds for the first ``decay_start`` fraction of ``num_updates`` updates, then falls linearly to 0 at
  update ``num_updates``."""
  check(config, group)
  learning_rate = config.learning_rate
  if config.linear_decay:
    decay_begins = int(config.decay_start * num_updates)
    learning_rate = optax.linear_schedule(config.learning_rate, 0.0, num_updates - decay_begins,
                                          transition_begin=decay_begins)
  return OPTIMIZERS[config.name](config, learning_rate)


class Optimizers(NamedTuple):
  """The two networks' optimizers."""
  generator: optax.GradientTransformation
  critic: optax.GradientTransformation


def build_optimizers(config: ml_collections.ConfigDict) -> Optimizers:
  """The optimizers of a whole config's ``generator`` and ``critic`` groups; a ``linear_decay`` reaches 0 at the end
  of the run: after ``num_steps`` generator updates and ``num_steps * n_critic`` critic updates."""
  return Optimizers(
      generator=build_optimizer(config.generator, group="generator", num_updates=config.num_steps),
      critic=build_optimizer(config.critic, group="critic", num_updates=config.num_steps * config.n_critic),
  )
