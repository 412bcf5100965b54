"""Pictures of digits: image grids, denoising strips, and denoising GIFs (matplotlib + Pillow);
and a checkpoint's training-loss curve."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import torch

from notebook_support.files import atomic_write_bytes


def _to_display(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) in [-1, 1] -> (N, 1, H, W) in [0, 1] on the CPU."""
    return images.detach().float().cpu().clamp(-1, 1).add(1).div(2)


def show_images(images: torch.Tensor, nrow: int = 8, title: str | None = None,
                ax=None, figsize: float = 5.0):
    """Show a batch (N, 1, H, W) in [-1, 1] as one grayscale grid; returns the axis."""
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    grid = make_grid(_to_display(images), nrow=nrow, padding=2, pad_value=1.0)  # (3, H', W')
    if ax is None:
        _, ax = plt.subplots(figsize=(figsize, figsize * grid.shape[1] / grid.shape[2]))
    ax.imshow(grid[0].numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def show_forward_strip(images: Sequence[torch.Tensor], labels: Sequence, title: str | None = None,
                       row_names: Sequence[str] | None = None):
    """One row per entry of `images` (each (K, 1, H, W)): a strip of K frames titled by `labels`."""
    import matplotlib.pyplot as plt

    rows = len(images)
    cols = images[0].shape[0]
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.9 * rows + 0.5), squeeze=False)
    for r, strip in enumerate(images):
        strip = _to_display(strip)
        for c in range(cols):
            axes[r, c].imshow(strip[c, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
            axes[r, c].set_title(f"t = {labels[c]}", fontsize=9)
        if row_names:
            axes[r, 0].set_ylabel(row_names[r], fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_denoising_gif(frames: torch.Tensor, labels: Sequence, path: str | Path,
                       nrow: int = 4, fps: int = 10, hold_last: int = 10, dpi: int = 72) -> Path:
    """Write a GIF of frames (K, N, 1, H, W) in [-1, 1] (one grid per frame) with matplotlib's
    Pillow writer; the last frame is held for `hold_last` extra frames. Returns the path."""
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter
    from torchvision.utils import make_grid

    if frames.ndim != 5:
        raise ValueError(f"frames must have shape (K, N, C, H, W), got {tuple(frames.shape)}")
    grids = [make_grid(_to_display(f), nrow=nrow, padding=2, pad_value=1.0)[0].numpy() for f in frames]
    order = list(range(len(grids))) + [len(grids) - 1] * hold_last
    fig, ax = plt.subplots(figsize=(3, 3.3))
    ax.set_axis_off()
    image = ax.imshow(grids[0], cmap="gray", vmin=0, vmax=1)
    title = ax.set_title(f"t = {labels[0]}")

    def draw(i):
        image.set_data(grids[order[i]])
        title.set_text(f"t = {labels[order[i]]}")
        return image, title

    animation = FuncAnimation(fig, draw, frames=len(order), blit=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # rendered in a private folder, then written beside `path` by atomic_write_bytes: two kernels
    # saving the same GIF at once (the tests run two notebooks at a time) both succeed
    try:
        with tempfile.TemporaryDirectory(prefix="denoising-gif-") as scratch:
            rendered = Path(scratch) / path.name                # PillowWriter reads the format off ".gif"
            animation.save(rendered, writer=PillowWriter(fps=fps), dpi=dpi)
            atomic_write_bytes(path, rendered.read_bytes())
    finally:
        plt.close(fig)
    return path


def plot_loss_curve(payload: dict, ax=None, label: str | None = None, title: str | None = None):
    """A checkpoint's training loss, from its payload (load_or_train's second value): the means of
    50 steps (`loss_curve_every_50`) against the step, on a log scale; the y label says when the
    loss is min-SNR-weighted (the config's `min_snr_gamma`). `label` names the line in a legend (to
    draw several runs on one `ax`). A run shorter than 50 steps (a quick-mode stand-in) has no
    curve: the axis says so. Returns the axis."""
    import matplotlib.pyplot as plt
    import numpy as np

    curve = payload.get("loss_curve_every_50") or []
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.2))
    weighted = "min-SNR-weighted " if (payload.get("config") or {}).get("min_snr_gamma") else ""
    ax.set(xlabel="step", ylabel=f"{weighted}loss (mean of 50 steps)")
    if len(curve):
        ax.plot(np.arange(len(curve)) * 50, curve, label=label)
        ax.set_yscale("log")
        if label is not None:
            ax.legend()
    else:
        ax.text(0.5, 0.5, f"{payload.get('steps', 0)} steps: no 50-step means to plot", ha="center", va="center",
                transform=ax.transAxes)
    if title:
        ax.set_title(title)
    return ax


# benchmarks/samplers.py's names -> what the plot and the lab report call them
SAMPLER_MODELS = {"unet": "shipped U-Net (DEFAULT_CONFIG)", "laptop": "laptop U-Net (LAPTOP_CONFIG)"}
SOLVER_LABELS = {"ddim": "DDIM (Euler)", "heun": "Heun", "dpm++2m": "DPM-Solver++(2M)"}
GRID_LABELS = {"t-uniform": "t-uniform", "lambda": "λ-uniform", "karras": "Karras ρ = 7"}


def plot_sampler_quality(models: Sequence[str] = tuple(SAMPLER_MODELS), axes=None):
    """benchmarks/samplers.py's paired comparison, one panel per model: FID minus DDIM-50's on the same
    x_T against the network evaluations per digit, a line per solver and grid, with the paired 95 %
    interval as error bars; a line that reaches 0 ties DDIM-50. Reads samplers_paired_<model>; returns
    the axes."""
    import matplotlib.pyplot as plt

    from .results import latest_result

    if axes is None:
        _, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 4.2), squeeze=False)
        axes = axes[0]
    markers = {"ddim": "o", "heun": "s", "dpm++2m": "^"}
    styles = {"t-uniform": ":", "lambda": "-", "karras": "--"}
    for ax, model in zip(axes, models):
        result = latest_result(f"samplers_paired_{model}")
        lines: dict[tuple[str, str], list[dict]] = {}
        for row in result["rows"]:
            if not row["check"]:
                lines.setdefault((row["solver"], row["grid"]), []).append(row)
        for (solver, grid), rows in lines.items():
            rows = sorted(rows, key=lambda r: r["nfe"])
            values = [r["value"] for r in rows]
            spread = [[r["value"] - r["low"] for r in rows], [r["high"] - r["value"] for r in rows]]
            ax.errorbar([r["nfe"] for r in rows], values, yerr=spread, marker=markers[solver],
                        linestyle=styles[grid], capsize=3, label=f"{SOLVER_LABELS[solver]}, {GRID_LABELS[grid]}")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=10)
        ax.set(xlabel="network evaluations per digit", ylabel="FID minus DDIM-50's (same x_T)",
               title=f"{SAMPLER_MODELS.get(model, model)}, n = {result['n']:,}")
    axes[0].legend(fontsize=8, ncol=3)
    return axes
