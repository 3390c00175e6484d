"""Pictures: the paper's Figure 1 for toy runs, and image grids. Paths may be any ``etils.epath`` path (``gs://``)."""

import pathlib
from typing import Callable

import matplotlib
from etils import epath

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def toy_figure(
    path: str | pathlib.Path,
    *,
    real: np.ndarray,
    generated: np.ndarray,
    critic: Callable[[np.ndarray], np.ndarray],
    title: str = "",
    extent: float = 2.0,
    grid_points: int = 128,
) -> np.ndarray:
  """Real points, generated points and the critic's contours, as in Gulrajani et al. (2017), Figure 1.

  Returns the picture as uint8 RGB ``(H, W, 3)``.
  """
  axis = np.linspace(-extent, extent, grid_points, dtype=np.float32)
  xx, yy = np.meshgrid(axis, axis)
  scores = np.asarray(critic(np.stack([xx.ravel(), yy.ravel()], axis=1))).reshape(xx.shape)
  fig, ax = plt.subplots(figsize=(6, 6))
  contours = ax.contour(xx, yy, scores, levels=20, cmap="viridis", linewidths=0.8)
  fig.colorbar(contours, ax=ax, shrink=0.8, label="critic score")
  ax.scatter(real[:, 0], real[:, 1], c="orange", marker="+", s=12, label="real")
  ax.scatter(generated[:, 0], generated[:, 1], c="green", marker="+", s=12, label="generated")
  ax.set_xlim(-extent, extent)
  ax.set_ylim(-extent, extent)
  ax.set_aspect("equal")
  ax.legend(loc="upper right")
  ax.set_title(title)
  fig.tight_layout()
  _save_figure(fig, path)
  fig.canvas.draw()
  picture = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
  plt.close(fig)
  return picture


def _save_figure(fig: matplotlib.figure.Figure, path: str | pathlib.Path) -> None:
  with epath.Path(path).open("wb") as f:
    fig.savefig(f, dpi=100, format=epath.Path(path).suffix.lstrip(".") or "png")


def image_grid(images: np.ndarray, *, columns: int | None = None, padding: int = 2) -> np.ndarray:
  """Tiles uint8 images ``(N, H, W, C)`` into one uint8 picture ``(rows*(H+p)+p, cols*(W+p)+p, C)``."""
  if images.ndim != 4 or images.dtype != np.uint8:
    raise ValueError(f"images must be uint8 of shape (N, H, W, C), got {images.dtype} {images.shape}.")
  n, h, w, c = images.shape
  columns = columns or int(np.ceil(np.sqrt(n)))
  rows = int(np.ceil(n / columns))
  grid = np.full((rows * (h + padding) + padding, columns * (w + padding) + padding, c), 255, np.uint8)
  for index, image in enumerate(images):
    r, col = divmod(index, columns)
    top, left = padding + r * (h + padding), padding + col * (w + padding)
    grid[top:top + h, left:left + w] = image
  return grid


def save_image_grid(path: str | pathlib.Path, images: np.ndarray, *, columns: int | None = None,
                    scale: int = 1) -> np.ndarray:
  """Saves the grid of ``images`` as a PNG, each pixel ``scale`` times larger, and returns it (uint8 ``(H, W, C)``)."""
  grid = image_grid(images, columns=columns)
  picture = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
  if scale > 1:
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
  with epath.Path(path).open("wb") as f:
    picture.save(f, format="PNG")
  return np.asarray(picture).reshape(picture.height, picture.width, grid.shape[-1])


def save_scatter(path: str | pathlib.Path, points: np.ndarray, *, extent: float = 2.0) -> None:
  fig, ax = plt.subplots(figsize=(5, 5))
  ax.scatter(points[:, 0], points[:, 1], c="green", marker="+", s=12)
  ax.set_xlim(-extent, extent)
  ax.set_ylim(-extent, extent)
  ax.set_aspect("equal")
  fig.tight_layout()
  _save_figure(fig, path)
  plt.close(fig)


def save_labelled_grids(path: str | pathlib.Path, panels: list[tuple[str, np.ndarray]]) -> None:
  """One image grid per ``(title, uint8 images)`` panel, side by side."""
  fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.6), squeeze=False)
  for ax, (title, images) in zip(axes[0], panels):
    grid = image_grid(images)
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
  fig.tight_layout()
  _save_figure(fig, path)
  plt.close(fig)


def save_labelled_grid_table(path: str | pathlib.Path, row_labels: list[str], column_labels: list[str],
                             cells: list[list[tuple[str, np.ndarray] | None]]) -> None:
  """A table of image grids, as the paper's Figure 2: ``cells[r][c]`` is ``(caption, uint8 images)`` (or None, left
  blank) under column ``column_labels[c]``, in row ``row_labels[r]``."""
  if len(cells) != len(row_labels) or any(len(row) != len(column_labels) for row in cells):
    raise ValueError(f"cells must be {len(row_labels)} rows of {len(column_labels)} cells")
  fig, axes = plt.subplots(len(row_labels), len(column_labels), squeeze=False,
                           figsize=(3 * len(column_labels) + 1, 3.3 * len(row_labels) + 0.5))
  for r, row in enumerate(cells):
    for c, cell in enumerate(row):
      ax = axes[r][c]
      ax.set_xticks([])
      ax.set_yticks([])
      for spine in ax.spines.values():
        spine.set_visible(False)
      if cell is not None:
        caption, images = cell
        grid = image_grid(images)
        ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", interpolation="nearest")
        ax.set_xlabel(caption)
      if r == 0:
        ax.set_title(column_labels[c], fontsize=13)
      if c == 0:
        ax.set_ylabel(row_labels[r], fontsize=13)
  fig.tight_layout()
  _save_figure(fig, path)
  plt.close(fig)


def save_curves(path: str | pathlib.Path, curves: dict[str, tuple[np.ndarray, np.ndarray]], *, xlabel: str,
                ylabel: str, title: str = "", floor: float | None = None) -> None:
  """Lines ``label -> (x, y)`` with markers; ``floor`` draws a dashed horizontal reference (e.g. real-vs-real FID)."""
  fig, ax = plt.subplots(figsize=(6, 4))
  for label, (x, y) in curves.items():
    ax.plot(x, y, marker="o", label=label)
  if floor is not None:
    ax.axhline(floor, linestyle="--", color="gray", label=f"real vs real ({floor:.1f})")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  _save_figure(fig, path)
  plt.close(fig)
