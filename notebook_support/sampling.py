"""Sampling many digits on a CPU: call a sampler of `diffusion_utils` on chunks of 128 images and
concatenate.

Chunks bound the memory of a 2,000-digit run, and on a 2-core CPU batch 128 is among the fastest
in the committed logs (notebook 3 prints them: no size wins everywhere; batch 500 was the
slowest). Every chunk continues the same generator, so a run is reproducible.

A model that holds something per image (notebook 4's `Guided` with one label per image) says how
to split it: it has a method `for_images(start, stop, total)` that returns the model for images
start..stop-1 of `total`, and each chunk is sampled with its own.
"""

from __future__ import annotations

from typing import Callable

import torch

import diffusion_utils as du

CPU_CHUNK = 128  # bounded memory; among the fastest batches on a 2-core CPU (notebook 3 prints the logs)


def sample_in_chunks(sampler: Callable, model, schedule, num_samples: int, *, chunk_size: int | None = None,
                     image_shape: tuple = (1, 28, 28), x_T: torch.Tensor | None = None,
                     return_trajectory: bool = False, progress: bool = True, **sampler_kwargs):
    """`sampler(model, schedule, (num_samples, *image_shape), ...)` run `chunk_size` images at a time.

    sampler: `du.p_sample_loop` or `du.ddim_sample`; sampler_kwargs go to it (generator, device,
    clip_x0, num_steps, eta, trajectory_stride, ...). chunk_size: default CPU_CHUNK on a CPU and
    all at once on an accelerator. x_T (num_samples, *image_shape) is split like the samples, and
    so is a model with per-image state (`model.for_images(start, stop, num_samples)`, see above).
    Returns the samples, or with return_trajectory (samples, frames (K, num_samples, ...), labels).
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    device = torch.device(sampler_kwargs.get("device") or schedule.device)
    if chunk_size is None:
        chunk_size = CPU_CHUNK if device.type == "cpu" else num_samples
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if x_T is not None and tuple(x_T.shape) != (num_samples, *image_shape):
        raise ValueError(f"x_T must have shape {(num_samples, *image_shape)}, got {tuple(x_T.shape)}")
    samples, frames, labels = [], [], None
    starts = range(0, num_samples, chunk_size)
    for start in du.progress_bar(starts, desc=f"{len(starts)} chunks of {chunk_size}",
                                 disable=not progress or len(starts) == 1):
        size = min(chunk_size, num_samples - start)
        chunk_x_T = x_T[start:start + size] if x_T is not None else None
        # e.g. Guided with one label per image: this chunk's labels, not the first `size` of them
        chunk_model = model.for_images(start, start + size, num_samples) if hasattr(model, "for_images") else model
        out = sampler(chunk_model, schedule, (size, *image_shape), x_T=chunk_x_T, return_trajectory=return_trajectory,
                      progress=progress and len(starts) == 1, **sampler_kwargs)
        if return_trajectory:
            out, chunk_frames, labels = out
            frames.append(chunk_frames)                                  # (K, size, 1, 28, 28)
        samples.append(out)
    images = torch.cat(samples)                                          # (num_samples, 1, 28, 28)
    return (images, torch.cat(frames, dim=1), labels) if return_trajectory else images
