"""The training runner: config-keyed cache, resumable runs, shipped checkpoints never overwritten.

The training *loop* is the notebooks' own (notebook 2 writes it, `lessons.mlp.train`); this
module only decides whether to train at all, and makes a run survive interruptions:

    load_or_train(config, UNet, train, data, "checkpoints/unet_default.pt")

loads the shipped file when its stored config *and* architecture equal the notebook's, else a
cached one trained earlier for exactly this config and code, else trains now with `train`,
saving its state every two minutes (an interruption loses at most that) and bit-exactly
resumable, and caches the result in checkpoints/cache/<model>_<tag>.pt.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

import diffusion_utils as du

from .checkpoints import (architecture_fingerprint, checkpoint_mismatch, config_tag, save_checkpoint,
                          validate_config)
from .environment import CACHE_DIR, PROJECT_ROOT, get_device
from .files import CorruptFileError, atomic_torch_save, check_writable, load_torch_file


def data_fingerprint(data: torch.Tensor) -> dict:
    """Shape, dtype, a hash of every 97th item and the sums of all values and their squares: cheap,
    yet different for other data."""
    sample = data[::97].detach().to("cpu", torch.float32).contiguous()
    total = square_total = 0.0  # sums over every item catch changes the stride misses
    for chunk in data.detach().split(4096):  # in float64, a chunk at a time: no full-size copy
        chunk = chunk.double()
        total, square_total = total + chunk.sum().item(), square_total + chunk.pow(2).sum().item()
    return {"shape": list(data.shape), "dtype": str(data.dtype),
            "sha256": hashlib.sha256(sample.numpy().tobytes()).hexdigest()[:16],
            "sums": [round(total, 6), round(square_total, 6)]}


def hardware_name(device: torch.device) -> str:
    """e.g. 'NVIDIA H200' or 'x86_64 CPU, 2 threads'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} {device.type.upper()}, {torch.get_num_threads()} threads"


class Resumer:
    """Saves a training run's whole state every `save_every_s` seconds (atomically) and restores it.

    The state is what the loop passes in: {"model", "optimizer", "ema", "generator", "losses"}.
    Besides their state dicts it stores the generator's and torch's global RNG states (dropout
    draws from the latter), so a resumed run is bit-identical to an uninterrupted one on the
    same machine. `identity` (config, architecture, schedule, data fingerprint) must match the
    file's, or restore refuses with an error that names the file.
    """

    def __init__(self, path: str | Path, identity: dict, save_every_s: float = 120.0):
        self.path, self.identity, self.save_every_s = Path(path), json.loads(json.dumps(identity)), save_every_s
        self.last_save = time.monotonic()

    def restore(self, state: dict) -> int:
        """Load the saved state into `state`'s objects if a file exists; return the step reached."""
        if not self.path.is_file():
            return 0
        try:
            saved = load_torch_file(self.path, what="resume file")
        except CorruptFileError as exc:
            print(f"{exc}; starting from step 0 instead")
            self.path.unlink(missing_ok=True)
            return 0
        if saved.get("identity") != self.identity:
            differing = sorted(k for k in set(self.identity) | set(saved.get("identity", {}))
                               if self.identity.get(k) != saved.get("identity", {}).get(k))
            raise ValueError(f"the resume file {self.path} continues another run (differs in {differing}); "
                             "delete it to start over")
        for name in ("model", "optimizer", "ema"):
            state[name].load_state_dict(saved[name])
        state["generator"].set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        if torch.cuda.is_available() and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        state["losses"][:] = saved["losses"]
        print(f"resumed from {self.path.name} at step {len(state['losses'])}")
        return len(state["losses"])

    def save(self, state: dict) -> None:
        atomic_torch_save({"identity": self.identity, "losses": list(state["losses"]),
                           **{name: state[name].state_dict() for name in ("model", "optimizer", "ema")},
                           "generator": state["generator"].get_state(), "torch_rng": torch.get_rng_state(),
                           "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
                          self.path)
        self.last_save = time.monotonic()

    def maybe_save(self, state: dict) -> None:
        """Save if `save_every_s` seconds passed since the last save; call after every step."""
        if time.monotonic() - self.last_save >= self.save_every_s:
            self.save(state)


def _schedule_for(config: dict, device) -> du.DiffusionSchedule:
    return du.DiffusionSchedule(num_timesteps=config["num_timesteps"], schedule=config["schedule"], device=device)


def _setting(config: dict, train_fn: Callable, name: str, fallback):
    """config[name], else `train_fn`'s default for it (validate_config lets a config omit those)."""
    if name in config:
        return config[name]
    param = inspect.signature(train_fn).parameters.get(name)
    return fallback if param is None or param.default is inspect.Parameter.empty else param.default


def train_kwargs(config: dict) -> dict:
    """The config's keyword arguments for the training function (everything but the model and schedule keys)."""
    return {k: v for k, v in config.items() if k not in ("model", "model_kwargs", "schedule", "num_timesteps")}


def _save_somewhere(path: Path, model: nn.Module, config: dict, architecture: dict, extra: dict) -> Path:
    """Save to `path`; if that fails, to the system temp folder, saying where (weights are never lost)."""
    try:
        return save_checkpoint(path, model, config, architecture, **extra)
    except OSError as exc:
        fallback = Path(tempfile.gettempdir()) / "mnist-diffusion" / path.name
        save_checkpoint(fallback, model, config, architecture, **extra)
        print(f"could not write {path} ({type(exc).__name__}: {exc}); the trained weights are in {fallback}")
        return fallback


def train_from_config(config: dict, model_class: type, train_fn: Callable, data: torch.Tensor,
                      path: str | Path, *, device: torch.device | str | None = None, progress: bool = True,
                      save_every_s: float = 120.0, hardware: str | None = None) -> tuple[nn.Module, dict]:
    """Train the model `config` describes with `train_fn` on `device` (default: the best one) and
    save its EMA weights, config, architecture, steps, final loss (mean of the last 500 steps), a
    loss curve (means of 50 steps), time and hardware to `path`. Resumable from a hidden file
    beside `path`. Returns (EMA model in eval mode, checkpoint payload)."""
    config = validate_config(config, model_class, train_fn)
    path = Path(path)
    check_writable(path.parent)  # fail now, not after hours of training
    device = torch.device(device) if device is not None else get_device()
    torch.manual_seed(_setting(config, train_fn, "seed", 0))  # the config's seed fixes the initial weights too
    model = model_class(**config["model_kwargs"])
    architecture = architecture_fingerprint(model)
    data = data.to(device)
    schedule = _schedule_for(config, device)
    identity = {"config": config, "architecture": architecture, "data": data_fingerprint(data),
                "betas": hashlib.sha256(schedule.betas.cpu().numpy().tobytes()).hexdigest()[:16]}
    resume_path = path.with_name(f".{path.stem}.resume.pt")
    resumer = Resumer(resume_path, identity, save_every_s)
    started = time.perf_counter()
    ema_model, losses = train_fn(model.to(device), schedule, data, progress=progress, resume=resumer,
                                 **train_kwargs(config))
    seconds = time.perf_counter() - started
    losses_t = torch.as_tensor(losses, dtype=torch.float64)  # (steps,)
    curve = losses_t[: len(losses_t) // 50 * 50].reshape(-1, 50).mean(1)  # (steps // 50,)
    extra = {"steps": len(losses), "final_loss": losses_t[-500:].mean().item(),
             "loss_curve_every_50": curve.tolist(), "train_seconds": seconds,
             "hardware": hardware or hardware_name(device)}
    saved_to = _save_somewhere(path, ema_model, config, architecture, extra)
    resume_path.unlink(missing_ok=True)
    return ema_model.eval(), load_torch_file(saved_to)


def seconds_per_step(model: nn.Module, config: dict, device: torch.device, repeats: int = 2, *,
                     image_shape: tuple = (1, 28, 28), batch_size: int | None = None) -> float:
    """Time of one training step (forward + backward at the config's batch size), measured now."""
    model = model.to(device).train()
    schedule = _schedule_for(config, device)
    batch_size = batch_size if batch_size is not None else config.get("batch_size", 128)
    x0 = torch.zeros(batch_size, *image_shape, device=device)  # (B, 1, 28, 28) for MNIST
    du.diffusion_loss(model, schedule, x0).backward()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        du.diffusion_loss(model, schedule, x0).backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    model.zero_grad(set_to_none=True)
    return (time.perf_counter() - started) / repeats


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds > 5400 else f"{seconds / 60:.0f} min" if seconds > 90 \
        else f"{seconds:.0f} s"


def _shown(path: Path) -> str:
    """A path as the reader should see it: relative to the project root when inside it."""
    return path.relative_to(PROJECT_ROOT).as_posix() if path.is_relative_to(PROJECT_ROOT) else str(path)


def load_or_train(config: dict, model_class: type, train_fn: Callable, data: torch.Tensor,
                  shipped_path: str | Path | None, cache_dir: str | Path = CACHE_DIR, *,
                  device: torch.device | str | None = None, progress: bool = True) -> tuple[nn.Module, dict]:
    """The EMA model for `config`, built from `model_class` (the notebook's own class):

    1. the shipped checkpoint, when its stored config and architecture equal this config and
       this class's code (relative paths are read from the project root, not the working folder);
    2. else a cached checkpoint trained earlier for exactly this config and code;
    3. else train now with `train_fn` (one line says why, and how long it will take here),
       resumable, cached under checkpoints/cache/; the shipped file is never overwritten.
    Returns (model in eval mode on `device`, checkpoint payload).
    """
    config = validate_config(config, model_class, train_fn)
    device = torch.device(device) if device is not None else get_device()
    why = "no checkpoint is shipped for it"
    if shipped_path is not None:
        shipped_path = Path(shipped_path)
        shipped_path = shipped_path if shipped_path.is_absolute() else PROJECT_ROOT / shipped_path
    model = model_class(**config["model_kwargs"])
    architecture = architecture_fingerprint(model)
    cache_dir = Path(cache_dir)
    cache_path = cache_dir / f"{config['model']}_{config_tag(config, architecture)}.pt"
    for path in (shipped_path, cache_path):
        if path is None:
            continue
        if not path.is_file():
            if path == shipped_path:
                why = f"the shipped checkpoint {_shown(shipped_path)} is missing"
            continue
        try:
            payload = load_torch_file(path)
        except CorruptFileError as exc:
            print(f"{exc}; it will be rebuilt" if path == cache_path else str(exc))
            if path == cache_path:
                path.unlink(missing_ok=True)
            else:
                why = f"the shipped checkpoint {_shown(shipped_path)} cannot be read"
            continue
        reasons = checkpoint_mismatch(payload, config, architecture)
        if not reasons:
            model.load_state_dict(payload["state_dict"])
            print(f"loaded {path.name} ({payload['steps']} steps, final loss {payload['final_loss']:.4f})")
            return model.to(device).eval(), payload
        if path == shipped_path:
            why = f"{_shown(shipped_path)} does not fit: " + "; ".join(reasons)
    per_step = seconds_per_step(model, config, device, image_shape=tuple(data.shape[1:]),
                                batch_size=_setting(config, train_fn, "batch_size", 128))
    check_writable(cache_dir)
    print(f"training because {why}. {config['num_steps']} steps at {per_step:.2f} s/step take about "
          f"{_duration(per_step * config['num_steps'])} on {hardware_name(device)}; progress is saved "
          f"every 2 min beside {cache_path.name}, so an interrupted run resumes")
    return train_from_config(config, model_class, train_fn, data, cache_path, device=device, progress=progress)
