"""The DCGAN WGAN-GP step of ``wgan_gp_jax`` written in PyTorch, for side-by-side timing.

The same function as ``wgan_gp_jax.models.dcgan`` with the same weights
(``load_flax_params``), in the formulation that does the least work in PyTorch,
so that the benchmark compares with the best PyTorch can do. The benchmark
checks that both compute the same losses before it times them, and
``tests/test_benchmark.py`` checks scores, images, losses and the critic's
gradients against the JAX models.

**Images and feature maps are stored with their rows and columns reversed.**
XLA/TensorFlow 'SAME' padding is asymmetric where PyTorch's ``padding=`` is
symmetric; reversing both spatial axes turns each of our layers into a plain
PyTorch layer, with no explicit padding and no slicing (per axis, ``n`` even,
``x'[i] = x[n - 1 - i]``):

* the critic's 5x5 stride-2 convolution pads ``(1, 2)``:
  ``y[o] = sum_t x[2o + t - 1] w[t]``. Reversed, ``y'[o] = sum_v x'[2o + v - 2] w[4 - v]``:
  ``Conv2d(padding=2)`` with the kernel flipped (of the ``n + 4`` padded inputs it
  reads ``n + 3``, exactly the ``(2, 1)`` padding of the reversed SAME convolution);
* the generator's 5x5 stride-2 transposed convolution (``lax.conv_transpose``,
  'SAME', unflipped kernel ``K``) pads the dilated input ``(3, 2)``:
  ``out[j] = sum_{2i + t - 1 = j} y[i] K[4 - t]``. Reversed,
  ``out'[j] = sum_{2i + v - 2 = j} y'[i] K[v]``: ``ConvTranspose2d(padding=2,
  output_padding=1)`` with ``K`` as it is, ``2n`` outputs and nothing to drop;
* batch norm, the activations, the penalty's per-example gradient norms and all
  the losses do not depend on the order of the pixels; the generator's dense
  layer writes its 4x4 map reversed and the critic's dense layer reads it
  reversed (their weights are permuted once, in ``load_flax_params``).

So the generator produces reversed images and the critic takes reversed images;
real images are reversed once, when they are loaded (``to_torch_images``; a data
pipeline reads its pixels in whichever order it likes), and
``from_torch_images`` turns images back. The networks run in ``channels_last``
memory (oneDNN's fastest layout for these convolutions here; flax's dense layers
read features in NHWC order, which is then a view).

The steps mirror ``wgan_gp_jax.train``: a critic update is the WGAN-GP loss on
``concat(real, fake)`` plus ``gp_weight`` times the penalty at random
interpolates (double backward through ``torch.autograd.grad(create_graph=True)``)
and one Adam step; a generator update is ``-mean D(G(z))`` and one Adam step.
Adam is PyTorch's fused implementation. ``WGANGP(device=...)`` puts the networks on another device (``"cuda"``);
images and latents then live there too.

Each update can run compiled (``compiled=True``): the forward and backward
passes, the critic's with the penalty's double backward, as one ``torch.compile``
graph per thread setting; where that does not compile it runs eagerly and
``WGANGP.compile_outcome`` says why.

Requires ``torch`` (``requirements-torch.txt``); nothing else in the project imports this module.
"""

from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wgan_gp_jax.models.dcgan import num_resolution_doublings

SPATIAL = (2, 3)  # NCHW


class Generator(nn.Module):
  """``DCGANGenerator`` on reversed pixels: dense -> 4x4 -> [transposed conv 5x5/2, batch norm, ReLU]... -> tanh."""

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
      self.deconvs.append(nn.ConvTranspose2d(features, out, 5, stride=2, padding=2, output_padding=1))
      self.norms.append(nn.BatchNorm2d(out, eps=1e-5, momentum=0.1))
      features = out
    self.deconvs.append(nn.ConvTranspose2d(features, channels, 5, stride=2, padding=2, output_padding=1))

  def forward(self, z: torch.Tensor) -> torch.Tensor:
    x = self.dense(z).view(z.shape[0], 4, 4, self.features).permute(0, 3, 1, 2)  # NCHW view of NHWC memory
    x = F.relu(self.norms[0](x))
    for i, deconv in enumerate(self.deconvs):
      x = deconv(x)
      x = F.relu(self.norms[i + 1](x)) if i + 1 < len(self.norms) else torch.tanh(x)
    return x


class Critic(nn.Module):
  """``DCGANCritic`` (without layer norm) on reversed pixels: [conv 5x5/2 padding 2, LeakyReLU(0.2)]... -> dense."""

  def __init__(self, resolution: int, channels: int, width: int):
    super().__init__()
    doublings = num_resolution_doublings(resolution)
    self.convs = nn.ModuleList()
    features = channels
    for i in range(doublings):
      self.convs.append(nn.Conv2d(features, width * 2**i, 5, stride=2, padding=2))
      features = width * 2**i
    self.dense = nn.Linear(16 * features, 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for conv in self.convs:
      x = F.leaky_relu(conv(x), 0.2)
    return self.dense(x.permute(0, 2, 3, 1).reshape(x.shape[0], -1))[:, 0]


def _tensor(array: Any) -> torch.Tensor:
  return torch.from_numpy(np.array(array, dtype=np.float32))


def _reversed_4x4_rows(kernel: torch.Tensor) -> torch.Tensor:
  """A dense kernel's feature axis (0), in flax's (4, 4, C) order, with the 4x4 positions reversed."""
  return torch.flip(kernel.reshape(4, 4, -1, *kernel.shape[1:]), (0, 1)).reshape(kernel.shape)


def load_flax_params(generator: Generator, critic: Critic, generator_params: Mapping[str, Any],
                     generator_batch_stats: Mapping[str, Any], critic_params: Mapping[str, Any]) -> None:
  """Copies flax parameters (and batch-norm statistics) into the torch modules, converting layouts."""
  with torch.no_grad():
    dense_kernel = _tensor(generator_params["Dense_0"]["kernel"])  # (latent, 4 * 4 * features)
    generator.dense.weight.copy_(_reversed_4x4_rows(dense_kernel.T))
    generator.dense.bias.copy_(_reversed_4x4_rows(_tensor(generator_params["Dense_0"]["bias"])))
    for i, norm in enumerate(generator.norms):
      norm.weight.copy_(_tensor(generator_params[f"BatchNorm_{i}"]["scale"]))
      norm.bias.copy_(_tensor(generator_params[f"BatchNorm_{i}"]["bias"]))
      norm.running_mean.copy_(_tensor(generator_batch_stats[f"BatchNorm_{i}"]["mean"]))
      norm.running_var.copy_(_tensor(generator_batch_stats[f"BatchNorm_{i}"]["var"]))
    for i, deconv in enumerate(generator.deconvs):
      kernel = _tensor(generator_params[f"ConvTranspose_{i}"]["kernel"])  # (kh, kw, in, out), unflipped
      deconv.weight.copy_(kernel.permute(2, 3, 0, 1))  # (in, out, kh, kw), still unflipped: see the module docstring
      deconv.bias.copy_(_tensor(generator_params[f"ConvTranspose_{i}"]["bias"]))
    for i, conv in enumerate(critic.convs):
      kernel = _tensor(critic_params[f"Conv_{i}"]["kernel"])  # HWIO
      conv.weight.copy_(torch.flip(kernel, (0, 1)).permute(3, 2, 0, 1))  # flipped, OIHW
      conv.bias.copy_(_tensor(critic_params[f"Conv_{i}"]["bias"]))
    critic.dense.weight.copy_(_reversed_4x4_rows(_tensor(critic_params["Dense_0"]["kernel"])).T)
    critic.dense.bias.copy_(_tensor(critic_params["Dense_0"]["bias"]))


def critic_grads_as_flax(critic: Critic) -> dict[str, dict[str, np.ndarray]]:
  """The critic's ``.grad`` in flax's names and layouts (the inverse of ``load_flax_params``' conversion)."""
  grads = {}
  for i, conv in enumerate(critic.convs):
    grads[f"Conv_{i}"] = {"kernel": torch.flip(conv.weight.grad.permute(2, 3, 1, 0), (0, 1)).numpy(),
                          "bias": conv.bias.grad.numpy()}
  grads["Dense_0"] = {"kernel": _reversed_4x4_rows(critic.dense.weight.grad.T).numpy(),
                      "bias": critic.dense.bias.grad.numpy()}
  return grads


def to_torch_images(images: Any) -> torch.Tensor:
  """NHWC images -> the critic's input: NCHW in channels_last memory, rows and columns reversed (one copy)."""
  return torch.flip(_tensor(images), (1, 2)).permute(0, 3, 1, 2)


def from_torch_images(images: torch.Tensor) -> np.ndarray:
  """The generator's output (or ``to_torch_images``') -> NHWC images in their usual order."""
  return torch.flip(images.detach().cpu(), SPATIAL).permute(0, 2, 3, 1).numpy()


def _adam(parameters, learning_rate: float, b1: float, b2: float) -> torch.optim.Adam:
  try:
    return torch.optim.Adam(parameters, lr=learning_rate, betas=(b1, b2), eps=1e-8, fused=True)
  except (RuntimeError, ValueError):  # no fused CPU Adam in this PyTorch
    return torch.optim.Adam(parameters, lr=learning_rate, betas=(b1, b2), eps=1e-8, foreach=True)


def _first_line(error: BaseException) -> str:
  lines = str(error).strip().splitlines()
  return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


class _Compiled:
  """``fn`` under ``torch.compile`` as one graph (``fullgraph=True``), compiled for ``threads`` threads.

  The critic's gradients need the double backward of the penalty inside the
  graph: Dynamo traces ``torch.autograd.grad`` (``create_graph=True``, then the
  parameter gradients) only with ``torch._dynamo.config.trace_autograd_ops``;
  without it, or where compilation fails for any other reason, the first call
  falls back to ``fn`` eagerly and says why in ``outcome`` (never silently: the
  benchmark prints and records it). Inductor's generated loops fix their
  OpenMP thread count when they are compiled (``cpp.threads``), so each thread
  setting has its own compilation.
  """

  def __init__(self, fn: Callable[..., Any], threads: int):
    self.fn = fn
    self.threads = threads
    self.compiled = torch.compile(fn, fullgraph=True, options={"cpp.threads": threads})
    self.outcome = "not called yet"

  def __call__(self, *args):
    if self.outcome.startswith("eager"):
      return self.fn(*args)
    try:
      with torch._dynamo.config.patch(trace_autograd_ops=True):
        result = self.compiled(*args)
    except Exception as error:  # noqa: BLE001: any compilation failure is reported through `outcome`
      if self.outcome == "compiled":
        raise  # it compiled once: a failure now is a real error
      self.outcome = f"eager (torch.compile failed: {_first_line(error)})"
      return self.fn(*args)
    self.outcome = "compiled"
    return result


class WGANGP:
  """The generator, the critic, their Adam optimizers and the two updates of a WGAN-GP iteration.

  Each update takes ``compiled``: False runs PyTorch eagerly; True runs the
  forward and backward passes (the critic's with the penalty's double backward)
  as one ``torch.compile`` graph per thread setting, falling back to eager with
  the reason in ``compile_outcome`` where that does not compile. Adam's step is
  PyTorch's fused kernel either way. ``device``: where the networks, their
  optimizer states and the random inputs of the updates live.
  """

  def __init__(self, resolution: int, channels: int, width: int, latent_dim: int, *, gp_weight: float = 10.0,
               learning_rate: float = 1e-4, b1: float = 0.0, b2: float = 0.9, device: str = "cpu"):
    self.latent_dim = latent_dim
    self.gp_weight = gp_weight
    self.device = torch.device(device)
    self.generator = Generator(resolution, channels, width, latent_dim).to(self.device,
                                                                           memory_format=torch.channels_last)
    self.critic = Critic(resolution, channels, width).to(self.device, memory_format=torch.channels_last)
    self.generator_optimizer = _adam(self.generator.parameters(), learning_rate, b1, b2)
    self.critic_optimizer = _adam(self.critic.parameters(), learning_rate, b1, b2)
    self._compiled: dict[tuple[str, int], _Compiled] = {}

  # The functions.

  def critic_loss(self, real: torch.Tensor, fake: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """``mean D(fake) - mean D(real) + gp_weight * mean_i (||grad D(x_hat_i)|| - 1)^2``, ``x_hat = t real + (1 - t) fake``."""
    scores = self.critic(torch.cat([real, fake]))
    real_scores, fake_scores = scores.chunk(2)
    interpolates = (t * real + (1 - t) * fake).requires_grad_(True)
    (gradients,) = torch.autograd.grad(self.critic(interpolates).sum(), interpolates, create_graph=True)
    norms = torch.linalg.vector_norm(gradients, dim=(1, 2, 3))  # flatten(1) would copy channels_last memory
    penalty = ((norms - 1.0) ** 2).mean()
    loss = fake_scores.mean() - real_scores.mean() + self.gp_weight * penalty
    return loss, {"critic_loss": loss, "gradient_penalty": penalty,
                  "wasserstein_estimate": real_scores.mean() - fake_scores.mean()}

  def generator_loss(self, z: torch.Tensor) -> torch.Tensor:
    return -self.critic(self.generator(z)).mean()

  def critic_gradients(self, real: torch.Tensor, z: torch.Tensor,
                       t: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Fakes from ``z`` (batch statistics, as in training), the critic loss and its gradients (critic parameters)."""
    with torch.no_grad():
      fake = self.generator(z)
    loss, _ = self.critic_loss(real, fake, t)
    return loss.detach(), torch.autograd.grad(loss, list(self.critic.parameters()))

  def generator_gradients(self, z: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """The generator loss through the critic and its gradients (generator parameters only)."""
    loss = self.generator_loss(z)
    return loss.detach(), torch.autograd.grad(loss, list(self.generator.parameters()))

  def gradient_function(self, name: str, compiled: bool) -> Callable[..., Any]:
    """``critic_gradients`` or ``generator_gradients``, eager or compiled for the current thread setting."""
    fn = getattr(self, f"{name}_gradients")
    if not compiled:
      return fn
    key = (name, torch.get_num_threads())
    if key not in self._compiled:
      self._compiled[key] = _Compiled(fn, key[1])
    return self._compiled[key]

  @property
  def compile_outcome(self) -> dict[str, str]:
    """How each compiled function ran: ``compiled`` or ``eager (torch.compile failed: ...)``."""
    return {f"{name}_{threads}_threads": compiled.outcome for (name, threads), compiled in self._compiled.items()}

  # The updates as the benchmark times them: fresh random inputs, as in ``train.py``.

  @staticmethod
  def _adam_step(optimizer: torch.optim.Optimizer, parameters, gradients) -> None:
    for parameter, gradient in zip(parameters, gradients):
      parameter.grad = gradient
    optimizer.step()

  def critic_update(self, real: torch.Tensor, *, compiled: bool = False) -> torch.Tensor:
    """One critic update on a real batch (fresh fakes and interpolation coefficients); returns the loss."""
    batch_size = real.shape[0]
    loss, gradients = self.gradient_function("critic", compiled)(
        real, torch.randn(batch_size, self.latent_dim, device=self.device),
        torch.rand(batch_size, 1, 1, 1, device=self.device))
    self._adam_step(self.critic_optimizer, self.critic.parameters(), gradients)
    return loss

  def generator_update(self, batch_size: int, *, compiled: bool = False) -> torch.Tensor:
    """One generator update (the critic is not updated); returns the loss."""
    loss, gradients = self.gradient_function("generator", compiled)(
        torch.randn(batch_size, self.latent_dim, device=self.device))
    self._adam_step(self.generator_optimizer, self.generator.parameters(), gradients)
    return loss

  def iteration(self, real_batches: list[torch.Tensor], *, compiled: bool = False) -> torch.Tensor:
    """``n_critic`` critic updates, one per real batch, then a generator update."""
    for batch in real_batches:
      self.critic_update(batch, compiled=compiled)
    return self.generator_update(real_batches[0].shape[0], compiled=compiled)


def largest_relative_difference(values, references) -> float:
  """The largest ``|value - reference|`` over all the tensors, relative to the largest ``|reference|`` of them all.

  One scale for a whole set of gradients: a gradient that is zero in exact arithmetic (a convolution bias before a
  batch norm, the critic's last bias) is rounding noise in both, and relative to itself would read as 100%.
  """
  scale = max(float(reference.abs().max()) for reference in references)
  return max(float((value - reference).abs().max()) for value, reference in zip(values, references)) / max(scale, 1e-30)
