"""The paper's 2-D toy distributions, sampled exactly as ``gan_toy.py`` makes them.

- ``8gaussians``: centres on a circle of radius 2, std 0.02, everything divided by 1.414.
- ``25gaussians``: centres ``2 * {-2..2}^2``, std 0.05, everything divided by 2.828.
  (``gan_toy.py`` draws a fixed set of 100,000 such points and cycles through it;
  we draw fresh points from the same mixture.)
- ``swissroll``: scikit-learn's ``make_swiss_roll(noise=0.25)``, columns 0 and 2, divided by 7.5.

References:
  Gulrajani et al., Improved Training of Wasserstein GANs, 2017; the authors'
  ``gan_toy.py`` (github.com/igul222/improved_wgan_training).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class GaussianMixture:
  """Equal-weight isotropic Gaussians: the centres and the std of each, in data units."""
  centres: np.ndarray
  std: float


def _eight_gaussians() -> GaussianMixture:
  s = 1.0 / np.sqrt(2.0)
  unit = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)])
  return GaussianMixture(centres=2.0 * unit / 1.414, std=0.02 / 1.414)


def _twenty_five_gaussians() -> GaussianMixture:
  grid = np.array([(2.0 * x, 2.0 * y) for x in range(-2, 3) for y in range(-2, 3)])
  return GaussianMixture(centres=grid / 2.828, std=0.05 / 2.828)


MIXTURES = {"8gaussians": _eight_gaussians(), "25gaussians": _twenty_five_gaussians()}
NAMES = ("8gaussians", "25gaussians", "swissroll")


def _swiss_roll(key: jax.Array, num: int) -> jax.Array:
  # scikit-learn's make_swiss_roll: t = 1.5 pi (1 + 2u), (t cos t, 21 v, t sin t) + 0.25 * noise.
  t_key, noise_key = jax.random.split(key)
  t = 1.5 * jnp.pi * (1.0 + 2.0 * jax.random.uniform(t_key, (num,)))
  noise = 0.25 * jax.random.normal(noise_key, (num, 2))
  return (jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], axis=1) + noise) / 7.5


def sample(name: str, key: jax.Array, num: int) -> jax.Array:
  """``num`` float32 points ``(num, 2)`` from the toy distribution ``name``."""
  if name == "swissroll":
    return _swiss_roll(key, num)
  if name not in MIXTURES:
    raise ValueError(f"unknown toy dataset {name!r}; choose one of {NAMES}.")
  mixture = MIXTURES[name]
  centre_key, noise_key = jax.random.split(key)
  centres = jnp.asarray(mixture.centres, jnp.float32)
  which = jax.random.randint(centre_key, (num,), 0, len(mixture.centres))
  return centres[which] + mixture.std * jax.random.normal(noise_key, (num, 2))
