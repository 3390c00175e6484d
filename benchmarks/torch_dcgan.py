"""The DCGAN WGAN-GP step of ``wgan_gp_jax`` written in PyTorch (eager, channels_last), for side-by-side timing.

The same function as ``wgan_gp_jax.models.dcgan`` with the same weights
(``load_flax_params``), so that the benchmark can check both compute the same
losses before it times them:

* the critic's 'SAME' 5x5 stride-2 convolutions pad (1, 2) like XLA/TensorFlow;
  PyTorch only pads symmetrically, so the input is padded explicitly;
* the generator's 'SAME' transposed convolutions are ``lax.conv_transpose``
  with an unflipped kernel: in PyTorch a ``conv_transpose2d`` with the kernel
  flipped, padding 1, and the last row and column of its output (one beyond
  ``2n``) dropped;
* flax's dense layers read features in NHWC order; the reshapes follow.

The steps mirror ``wgan_gp_jax.train``: a critic update is the WGAN-GP loss on
``concat(real, fake)`` plus ``gp_weight`` times the penalty at random
interpolates (double backward through ``torch.autograd.grad(create_graph=True)``)
and one Adam step; a generator update is ``-mean D(G(z))`` and one Adam step.

Requires ``torch`` (``requirements-torch.txt``); nothing else in the project imports this module.
"""

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wgan_gp_jax.models.dcgan import num_resolution_doublings


class Generator(nn.Module):
  """``DCGANGenerator``: dense -> 4x4 -> [transposed conv 5x5/2, batch norm, ReLU]... -> tanh."""

  def __init__(self, resolution: int, channels: int, width: int, latent_dim: int):
    super().__init__()
    doublings = num_resolution_doublings(resolution)
    self.features = width * 2 ** (doublings - 1)
    self.dense = nn.Linear(latent_dim, 16 * self.features)
    self.norms = nn.ModuleList([nn.BatchNorm2d(self.features, eps=1e-5, momentum=0.1)])
    self.deconvs = nn.ModuleList()
    features = self.features
    for i in range(doublings - 1):
      out = self.features // 2 ** (i + 1)
      self.deconvs.append(nn.ConvTranspose2d(features, out, 5, stride=2, padding=1))
      self.norms.append(nn.BatchNorm2d(out, eps=1e-5, momentum=0.1))
      features = out
    self.deconvs.append(nn.ConvTranspose2d(features, channels, 5, stride=2, padding=1))

  def forward(self, z: torch.Tensor) -> torch.Tensor:
    x = self.dense(z).view(z.shape[0], 4, 4, self.features).permute(0, 3, 1, 2)  # NCHW view of NHWC memory
    x = F.relu(self.norms[0](x))
    for i, deconv in enumerate(self.deconvs):
      size = 2 * x.shape[-1]
      x = deconv(x)[:, :, :size, :size]
      x = F.relu(self.norms[i + 1](x)) if i + 1 < len(self.norms) else torch.tanh(x)
    return x


class Critic(nn.Module):
  """``DCGANCritic`` (without layer norm): [conv 5x5/2 padded (1, 2), LeakyReLU(0.2)]... -> dense."""

  def __init__(self, resolution: int, channels: int, width: int):
    super().__init__()
    doublings = num_resolution_doublings(resolution)
    self.convs = nn.ModuleList()
    features = channels
    for i in range(doublings):
      self.convs.append(nn.Conv2d(features, width * 2**i, 5, stride=2, padding=0))
      features = width * 2**i
    self.dense = nn.Linear(16 * features, 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for conv in self.convs:
      x = F.leaky_relu(conv(F.pad(x, (1, 2, 1, 2))), 0.2)
    return self.dense(x.permute(0, 2, 3, 1).reshape(x.shape[0], -1))[:, 0]


def _tensor(array: Any) -> torch.Tensor:
  return torch.from_numpy(np.array(array, dtype=np.float32))


def load_flax_params(generator: Generator, critic: Critic, generator_params: Mapping[str, Any],
                     generator_batch_stats: Mapping[str, Any], critic_params: Mapping[str, Any]) -> None:
  """Copies flax parameters (and batch-norm statistics) into the torch modules, converting layouts."""
  with torch.no_grad():
    generator.dense.weight.copy_(_tensor(generator_params["Dense_0"]["kernel"]).T)
    generator.dense.bias.copy_(_tensor(generator_params["Dense_0"]["bias"]))
    for i, norm in enumerate(generator.norms):
      norm.weight.copy_(_tensor(generator_params[f"BatchNorm_{i}"]["scale"]))
      norm.bias.copy_(_tensor(generator_params[f"BatchNorm_{i}"]["bias"]))
      norm.running_mean.copy_(_tensor(generator_batch_stats[f"BatchNorm_{i}"]["mean"]))
      norm.running_var.copy_(_tensor(generator_batch_stats[f"BatchNorm_{i}"]["var"]))
    for i, deconv in enumerate(generator.deconvs):
      kernel = _tensor(generator_params[f"ConvTranspose_{i}"]["kernel"])  # (kh, kw, in, out), unflipped
      deconv.weight.copy_(torch.flip(kernel, (0, 1)).permute(2, 3, 0, 1))  # (in, out, kh, kw)
      deconv.bias.copy_(_tensor(generator_params[f"ConvTranspose_{i}"]["bias"]))
    for i, conv in enumerate(critic.convs):
      conv.weight.copy_(_tensor(critic_params[f"Conv_{i}"]["kernel"]).permute(3, 2, 0, 1))  # HWIO -> OIHW
      conv.bias.copy_(_tensor(critic_params[f"Conv_{i}"]["bias"]))
    critic.dense.weight.copy_(_tensor(critic_params["Dense_0"]["kernel"]).T)
    critic.dense.bias.copy_(_tensor(critic_params["Dense_0"]["bias"]))


def to_torch_images(images: Any) -> torch.Tensor:
  """NHWC array -> NCHW tensor in channels_last memory (no copy of the layout)."""
  return _tensor(images).permute(0, 3, 1, 2)


class WGANGP:
  """The generator, the critic, their Adam optimizers and the two updates of a WGAN-GP iteration."""

  def __init__(self, resolution: int, channels: int, width: int, latent_dim: int, *, gp_weight: float = 10.0,
               learning_rate: float = 1e-4, b1: float = 0.0, b2: float = 0.9):
    self.latent_dim = latent_dim
    self.gp_weight = gp_weight
    self.generator = Generator(resolution, channels, width, latent_dim).to(memory_format=torch.channels_last)
    self.critic = Critic(resolution, channels, width).to(memory_format=torch.channels_last)
    self.generator_optimizer = torch.optim.Adam(self.generator.parameters(), lr=learning_rate, betas=(b1, b2), eps=1e-8)
    self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=learning_rate, betas=(b1, b2), eps=1e-8)

  def critic_loss(self, real: torch.Tensor, fake: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """``mean D(fake) - mean D(real) + gp_weight * mean_i (||grad D(x_hat_i)|| - 1)^2``, ``x_hat = t real + (1 - t) fake``."""
    scores = self.critic(torch.cat([real, fake]))
    real_scores, fake_scores = scores.chunk(2)
    interpolates = (t * real + (1 - t) * fake).requires_grad_(True)
    (gradients,) = torch.autograd.grad(self.critic(interpolates).sum(), interpolates, create_graph=True)
    norms = gradients.flatten(1).norm(dim=1)
    penalty = ((norms - 1.0) ** 2).mean()
    loss = fake_scores.mean() - real_scores.mean() + self.gp_weight * penalty
    return loss, {"critic_loss": loss, "gradient_penalty": penalty,
                  "wasserstein_estimate": real_scores.mean() - fake_scores.mean()}

  def critic_update(self, real: torch.Tensor) -> torch.Tensor:
    """One critic update on a real batch (fresh fakes and interpolation coefficients), as in ``train.py``."""
    batch_size = real.shape[0]
    with torch.no_grad():
      fake = self.generator(torch.randn(batch_size, self.latent_dim))
    t = torch.rand(batch_size, 1, 1, 1)
    self.critic_optimizer.zero_grad(set_to_none=True)
    loss, _ = self.critic_loss(real, fake, t)
    loss.backward()
    self.critic_optimizer.step()
    return loss.detach()

  def generator_loss(self, z: torch.Tensor) -> torch.Tensor:
    return -self.critic(self.generator(z)).mean()

  def generator_update(self, batch_size: int) -> torch.Tensor:
    self.critic.requires_grad_(False)
    self.generator_optimizer.zero_grad(set_to_none=True)
    loss = self.generator_loss(torch.randn(batch_size, self.latent_dim))
    loss.backward()
    self.generator_optimizer.step()
    self.critic.requires_grad_(True)
    return loss.detach()

  def iteration(self, real_batches: list[torch.Tensor]) -> torch.Tensor:
    """``n_critic`` critic updates, one per real batch, then a generator update."""
    for batch in real_batches:
      self.critic_update(batch)
    return self.generator_update(real_batches[0].shape[0])
