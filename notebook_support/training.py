"""The training runner: config-keyed cache, resumable runs, shipped checkpoints never overwritten.

The training *loop* is the notebooks' own (notebook 2 writes it, `lessons.mlp.train`; notebook 3
extends it with the laptop recipe, `train_recipe`, and notebook 4 with labels, `train_conditional`);
this module only decides whether to train at all, and makes a run survive interruptions:

    load_or_train(config, UNet, train, data, "checkpoints/unet_default.pt")

loads the shipped file when everything that shaped its weights equals the notebook's -- the
config, the model's code, the training function's code, the arguments bound into it with
functools.partial (e.g. labels) and the data -- else a cached one trained earlier for exactly
these, else trains now with `train`, saving its state every two minutes (an interruption loses
at most that) and bit-exactly resumable, and caches the result in
checkpoints/cache/<model>_<tag>.pt. A config's `bf16` means bfloat16 autocast where the device
computes it natively, else float32 (emulated bf16 is slower than float32): `choose_bf16`.

Two guards for a reader's edit that would train: a run estimated above `max_train_minutes`
(default 20) stops before its first step with `TrainingTooLong`, saying the estimate and the two
ways on; and in quick mode (DDPM_QUICK=1) it trains a stand-in of QUICK_TRAIN_STEPS steps instead
(the same training function, the config's num_steps replaced), cached apart from any full run, whose
payload says `quick_stand_in: True`.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import math
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

import diffusion_utils as du

from .checkpoints import (architecture_fingerprint, checkpoint_mismatch, config_tag, load_weights, normalize_config,
                          save_checkpoint, training_fingerprint, unwrap_training_function, validate_config,
                          value_fingerprint)
from .environment import CACHE_DIR, PROJECT_ROOT, get_device, is_quick_mode
from .files import CorruptFileError, atomic_torch_save, check_writable, load_torch_file


def data_fingerprint(data: torch.Tensor) -> dict:
    """Shape, dtype and a SHA-256 of every byte (read on the CPU, so the same on every device and
    thread count): equal only for the same data, and cheap (one pass of a hash, no arithmetic)."""
    fingerprint = value_fingerprint(data)
    return {"shape": fingerprint["tensor"], "dtype": fingerprint["dtype"], "sha256": fingerprint["sha256"]}


def hardware_name(device: torch.device) -> str:
    """e.g. 'NVIDIA H200' or 'x86_64 CPU, 2 threads'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} {device.type.upper()}, {torch.get_num_threads()} threads"


RESUME_ENTRIES = ("identity", "losses", "model", "optimizer", "ema", "generator", "torch_rng")


def _resume_problem(saved, identity: dict) -> str | None:
    """Why a resume file whose identity fits cannot continue the run (None when it can): entries
    missing, losses that are not finite numbers, more losses than the run has steps, RNG states
    that are not byte tensors."""
    if not isinstance(saved, dict):
        return f"holds a {type(saved).__name__}, not a dict"
    missing = [k for k in RESUME_ENTRIES if k not in saved]
    if missing:
        return f"misses {missing}"
    losses = saved["losses"]
    if not isinstance(losses, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               and math.isfinite(v) for v in losses):
        return "holds losses that are not a list of finite numbers"
    steps = identity.get("config", {}).get("num_steps") if isinstance(identity.get("config"), dict) else None
    if isinstance(steps, int) and len(losses) > steps:
        return f"records {len(losses)} losses, more than the run's {steps} steps"
    for name in ("generator", "torch_rng"):
        if not (isinstance(saved[name], torch.Tensor) and saved[name].dtype == torch.uint8):
            return f"holds a {name} state that is not a byte tensor"
    return None


class Resumer:
    """Saves a training run's whole state every `save_every_s` seconds (atomically) and restores it.

    The state is what the loop passes in: {"model", "optimizer", "ema", "generator", "losses"}.
    Besides their state dicts it stores the generator's and torch's global RNG states (dropout
    draws from the latter), so a resumed run is bit-identical to an uninterrupted one on the
    same machine. `identity` (config, architecture, training code, bound arguments, data,
    schedule, precision) must match the file's, or restore refuses with an error that names the file.
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
        except FileNotFoundError:  # a second run of the same config finished and removed it just now
            return 0
        except CorruptFileError as exc:
            print(f"{exc}; starting from step 0 instead")
            self.path.unlink(missing_ok=True)
            return 0
        if isinstance(saved, dict) and saved.get("identity") != self.identity:
            stored = saved.get("identity") if isinstance(saved.get("identity"), dict) else {}
            differing = sorted(k for k in set(self.identity) | set(stored) if self.identity.get(k) != stored.get(k))
            raise ValueError(f"the resume file {self.path} continues another run (differs in {differing}); "
                             "delete it to start over")
        problem = _resume_problem(saved, self.identity)
        if problem is None:
            fresh = {name: copy.deepcopy(state[name].state_dict()) for name in ("model", "optimizer", "ema")}
            try:
                for name in ("model", "optimizer", "ema"):
                    state[name].load_state_dict(saved[name])
                state["generator"].set_state(saved["generator"])
            except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as exc:
                for name in ("model", "optimizer", "ema"):   # back to the fresh run's state
                    state[name].load_state_dict(fresh[name])
                problem = f"holds state that does not fit this run ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        if problem is not None:
            print(f"the resume file {self.path} {problem}: it was damaged or edited; starting from step 0 instead")
            self.path.unlink(missing_ok=True)
            return 0
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


def with_changes(base: dict, changes: dict) -> dict:
    """`base` with the keys of `changes` replaced; `changes["model_kwargs"]` replaces the U-Net's
    keyword arguments one by one, so a recipe names only what it changes (notebook 5's LAPTOP_FLOW).
    A misspelt key fails where it is used (validate_config, the U-Net, the training function)."""
    return {**base, **changes, "model_kwargs": {**base["model_kwargs"], **changes.get("model_kwargs", {})}}


def choose_bf16(device: torch.device | str) -> tuple[bool, str]:
    """(whether bf16 autocast is native on `device`, why). Where it is not, autocast still runs but
    converts in software, slower than float32 (benchmarks/precision_choice.py measures both), so a
    config's bf16 is used only where native: CPUs with AVX512-BF16 or AMX, GPUs that report native
    bf16. The answer depends on the machine alone, so a resumed run uses the same precision."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch: no emulation to exclude
            native = torch.cuda.is_bf16_supported()
        name = torch.cuda.get_device_name(device)
        return native, f"{name} {'computes' if native else 'does not compute'} bfloat16 natively"
    if device.type == "cpu":
        features = [name for name, probe in (("AVX512-BF16", "_is_avx512_bf16_supported"), ("AMX", "_is_amx_tile_supported"))
                    if getattr(torch.cpu, probe, lambda: False)()]
        if features:
            return True, f"this CPU computes bfloat16 natively ({' and '.join(features)})"
        return False, (f"this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native bfloat16 (AVX512-BF16 or "
                       "AMX), so bf16 autocast would be emulated, slower than float32")
    return False, f"bf16 autocast is not measured on {device.type} in this project"


def training_settings(config: dict, device: torch.device | str) -> tuple[dict, str | None]:
    """The keyword arguments the runner passes to the training function: the config's, with `bf16`
    resolved for `device` (choose_bf16), and one line saying which precision and why (None when
    the config does not ask for bf16)."""
    kwargs = train_kwargs(config)
    if not kwargs.get("bf16"):
        return kwargs, None
    kwargs["bf16"], why = choose_bf16(device)
    return kwargs, (f"precision: bf16 autocast, as the config asks: {why}" if kwargs["bf16"]
                    else f"precision: float32 instead of the config's bf16: {why}")


def run_fingerprint(train_fn: Callable, data: torch.Tensor) -> dict:
    """What shapes the weights besides the config and the model's code: {"training_code",
    "bound_arguments", "data"} (see checkpoints.training_fingerprint and data_fingerprint)."""
    training_code, bound_arguments = training_fingerprint(train_fn)
    return {"training_code": training_code, "bound_arguments": bound_arguments, "data": data_fingerprint(data)}


def _cache_path(cache_dir: Path, config: dict, architecture: dict, run: dict) -> Path:
    return Path(cache_dir) / f"{config['model']}_{config_tag(config, architecture, run)}.pt"


def cache_file(config: dict, model_class: type, train_fn: Callable, data: torch.Tensor,
               cache_dir: str | Path = CACHE_DIR) -> Path:
    """The file load_or_train caches this model in: its name's tag hashes the config, the model's
    code, the training code, the bound arguments and the data."""
    model = model_class(**config["model_kwargs"])
    return _cache_path(Path(cache_dir), normalize_config(config), architecture_fingerprint(model),
                       run_fingerprint(train_fn, data))


def _save_somewhere(path: Path, model: nn.Module, config: dict, architecture: dict, extra: dict,
                    resume_path: Path) -> Path:
    """Save to `path`; if that fails, to a new folder of this user's own in the system temp folder
    (tempfile.mkdtemp: a fresh name, mode 0700, so another user's folder there never blocks it),
    saying where. If that fails too, raise OSError saying plainly that the weights could not be
    saved and where the last resume state is."""
    try:
        return save_checkpoint(path, model, config, architecture, **extra)
    except OSError as exc:
        failures = [f"{path} ({type(exc).__name__}: {exc})"]
    folder = None
    try:
        folder = Path(tempfile.mkdtemp(prefix="mnist-diffusion-"))
        fallback = save_checkpoint(folder / path.name, model, config, architecture, **extra)
    except OSError as exc:
        failures.append(f"{folder or 'a new folder in ' + tempfile.gettempdir()} ({type(exc).__name__}: {exc})")
        resume = (f"the last resume state is {resume_path}: run the same config again to continue from it"
                  if resume_path.is_file() else "no resume state was saved (the run was shorter than the save interval)")
        raise OSError(f"the trained weights could not be saved: {'; nor to '.join(failures)}. {resume}") from None
    print(f"could not write {failures[0]}; the trained weights are in {fallback}")
    return fallback


def train_from_config(config: dict, model_class: type, train_fn: Callable, data: torch.Tensor,
                      path: str | Path, *, device: torch.device | str | None = None, progress: bool = True,
                      save_every_s: float = 120.0, hardware: str | None = None,
                      record: dict | None = None) -> tuple[nn.Module, dict]:
    """Train the model `config` describes with `train_fn` on `device` (default: the best one) and
    save its EMA weights, config, architecture, training code, bound arguments, data fingerprint,
    precision, steps, final loss (mean of the last 500 steps), a loss curve (means of 50 steps),
    time and hardware to `path`, and the plain values of `record` (e.g. a quick stand-in's marks).
    Resumable from a hidden file beside `path`. A config's bf16 is used only where native
    (choose_bf16); one line says which precision and why. Returns (EMA model in eval mode,
    checkpoint payload)."""
    device = torch.device(device) if device is not None else get_device()
    config = validate_config(config, model_class, train_fn, image_shape=tuple(data.shape[1:]), device=device)
    path = Path(path)
    check_writable(path.parent)  # fail now, not after hours of training
    kwargs, precision = training_settings(config, device)
    if precision:
        print(precision)
    torch.manual_seed(_setting(config, train_fn, "seed", 0))  # the config's seed fixes the initial weights too
    model = model_class(**config["model_kwargs"])
    architecture = architecture_fingerprint(model)
    data = data.to(device)
    schedule = _schedule_for(config, device)
    run = run_fingerprint(train_fn, data)
    used = "bf16 autocast" if kwargs.get("bf16") else "float32"
    identity = {"config": config, "architecture": architecture, **run, "precision": used,
                "betas": hashlib.sha256(schedule.betas.cpu().numpy().tobytes()).hexdigest()[:16]}
    resume_path = path.with_name(f".{path.stem}.resume.pt")
    resumer = Resumer(resume_path, identity, save_every_s)
    started = time.perf_counter()
    ema_model, losses = train_fn(model.to(device), schedule, data, progress=progress, resume=resumer, **kwargs)
    seconds = time.perf_counter() - started
    losses_t = torch.as_tensor(losses, dtype=torch.float64)  # (steps,)
    curve = losses_t[: len(losses_t) // 50 * 50].reshape(-1, 50).mean(1)  # (steps // 50,)
    extra = {**run, "precision": used, "steps": len(losses), "final_loss": losses_t[-500:].mean().item(),
             "loss_curve_every_50": curve.tolist(), "train_seconds": seconds,
             "hardware": hardware or hardware_name(device), **(record or {})}
    saved_to = _save_somewhere(path, ema_model, config, architecture, extra, resume_path)
    resume_path.unlink(missing_ok=True)
    return ema_model.eval(), load_torch_file(saved_to)


WARM_STEPS, TIMED_STEPS = 2, 3   # the estimate of load_or_train: steps of the loop run before timing, and timed
QUICK_TRAIN_STEPS = 4            # quick mode: an edit that would train trains this many steps instead
MAX_TRAIN_MINUTES = 20           # load_or_train's default limit on a run's estimated time


class TrainingTooLong(RuntimeError):
    """load_or_train would train for longer than its `max_train_minutes`: raised before step 1."""


def quick_stand_in_config(config: dict, steps: int | None = None) -> dict | None:
    """`config` shortened to `steps` (default QUICK_TRAIN_STEPS) training steps, warm-up capped at
    that, for a quick-mode stand-in; None when the config is no longer than that (or steps is 0)."""
    steps = QUICK_TRAIN_STEPS if steps is None else steps
    if not steps or config["num_steps"] <= steps:
        return None
    shorter = {**config, "num_steps": steps}
    if "warmup_steps" in shorter:
        shorter["warmup_steps"] = min(shorter["warmup_steps"], steps)
    return shorter


def _stand_in_line(payload: dict, path: Path) -> str:
    per_step = payload["train_seconds"] / payload["quick_steps"]       # first steps included: an upper guess
    return (f"quick mode (DDPM_QUICK=1): {path.name} is a stand-in trained for {payload['quick_steps']} of the "
            f"config's {payload['full_num_steps']} steps (the same training code; at its {per_step:.2f} s/step the "
            f"full run takes about {_duration(per_step * payload['full_num_steps'])} on {payload['hardware']}), so "
            "checks of its quality are skipped; full mode trains or loads the real model")


class _StepClock:
    """Stands in for a Resumer to time the loop: it restores nothing and notes the time after every step."""

    def __init__(self, device: torch.device):
        self.device, self.times = device, []

    def restore(self, state: dict) -> int:
        return 0

    def maybe_save(self, state: dict) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.times.append(time.perf_counter())


def seconds_per_step(model: nn.Module, train_fn: Callable, data: torch.Tensor, schedule: du.DiffusionSchedule,
                     kwargs: dict, *, warm_steps: int = WARM_STEPS, timed_steps: int = TIMED_STEPS) -> float:
    """Seconds per step of the training loop itself with the settings it will use (`kwargs`:
    precision, batch size, loss weights, bound labels), timed over `timed_steps` steps after
    `warm_steps` warm-up steps, on a copy of `model` (the first steps are slow: allocation, kernel
    choice). A functools.wraps wrapper is timed as the function it wraps (see
    checkpoints.unwrap_training_function)."""
    function, args, bound = unwrap_training_function(train_fn)
    clock = _StepClock(data.device)
    started = time.perf_counter()
    function(*args, copy.deepcopy(model), schedule, data,
             **{**bound, **kwargs, "num_steps": warm_steps + timed_steps, "progress": False, "resume": clock})
    if len(clock.times) > warm_steps >= 1:
        return (clock.times[-1] - clock.times[warm_steps - 1]) / (len(clock.times) - warm_steps)
    return (time.perf_counter() - started) / (warm_steps + timed_steps)   # a loop that never calls maybe_save


def seconds_per_step_by_precision(model: nn.Module, train_fn: Callable, data: torch.Tensor,
                                  schedule: du.DiffusionSchedule, config: dict, *,
                                  timed_steps: int = TIMED_STEPS) -> tuple[dict, str]:
    """Seconds per step of `config`'s loop (seconds_per_step) in float32 and, where the data's device
    computes bfloat16 natively (choose_bf16: emulated bf16 is slower than float32), under bf16
    autocast, whatever the config's own "bf16": ({"float32": s, "bfloat16": s}, choose_bf16's reason).
    For the loops that take a `bf16` switch (train_recipe and the ones built on it)."""
    native_bf16, why = choose_bf16(data.device)
    per_step = {}
    for precision in ["float32", *(["bfloat16"] if native_bf16 else [])]:
        kwargs = train_kwargs({**config, "bf16": precision == "bfloat16"})
        per_step[precision] = seconds_per_step(model, train_fn, data, schedule, kwargs, timed_steps=timed_steps)
    return per_step, why


def describe_run(payload: dict) -> str:
    """One line about how a checkpoint was trained, e.g. 'trained for 2500 steps in 13.2 min on
    x86_64 CPU, 2 threads, final loss 0.0143 (min-SNR-weighted)' (plots.plot_loss_curve draws its curve)."""
    weighted = " (min-SNR-weighted)" if (payload.get("config") or {}).get("min_snr_gamma") else ""
    stand_in = ", a quick-mode stand-in" if payload.get("quick_stand_in") else ""
    seconds = payload.get("train_seconds")
    time_taken = "(time not recorded)" if seconds is None else f"in {seconds / 60:.1f} min"
    return (f"trained for {payload['steps']} steps {time_taken} on {payload.get('hardware', 'unrecorded hardware')}"
            f"{stand_in}, final loss {payload['final_loss']:.4f}{weighted}")


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds > 5400 else f"{seconds / 60:.0f} min" if seconds > 90 \
        else f"{seconds:.0f} s"


def _shown(path: Path) -> str:
    """A path as the reader should see it: relative to the project root when inside it."""
    return path.relative_to(PROJECT_ROOT).as_posix() if path.is_relative_to(PROJECT_ROOT) else str(path)


def load_or_train(config: dict, model_class: type, train_fn: Callable, data: torch.Tensor,
                  shipped_path: str | Path | None, cache_dir: str | Path = CACHE_DIR, *,
                  device: torch.device | str | None = None, progress: bool = True,
                  max_train_minutes: float | None = MAX_TRAIN_MINUTES, hint: str | None = None,
                  quick: bool | None = None) -> tuple[nn.Module, dict]:
    """The EMA model for `config`, built from `model_class` (the notebook's own class):

    1. the shipped checkpoint, when what shaped its weights equals what would shape them now:
       the config, this class's code, the code of `train_fn` and the project functions it calls,
       the arguments bound into `train_fn` with functools.partial (e.g. labels) and the data
       (relative paths are read from the project root, not the working folder);
    2. else a cached checkpoint trained earlier for exactly these (cache_file names it);
    3. else train now with `train_fn`: one line says why (which of config, model code, training
       code, bound arguments and data differ) and how long it will take here, timed on a few
       steps of the loop after warm-up with the settings it will use; resumable, cached under
       checkpoints/cache/; the shipped file is never overwritten.
    Before step 1 of 3, a run estimated above `max_train_minutes` (None: no limit) raises
    TrainingTooLong with one message: why it would train, the estimate here, and the two ways on
    (raise MAX_TRAIN_MINUTES in the config cell, or `hint`, e.g. 'use the laptop preset:
    PRESET = "laptop"'; default: undo the edit, or lower num_steps where nothing is shipped). In quick mode (`quick`, default is_quick_mode())
    3 trains a stand-in of QUICK_TRAIN_STEPS steps instead, whatever the estimate, cached as
    quick<steps>_<model>_<tag>.pt (a full run never loads it); its payload has quick_stand_in: True,
    quick_steps and full_num_steps, and one line says so.
    Returns (model in eval mode on `device`, checkpoint payload).
    """
    device = torch.device(device) if device is not None else get_device()
    config = validate_config(config, model_class, train_fn, image_shape=tuple(data.shape[1:]), device=device)
    why = "no checkpoint is shipped for it"
    if shipped_path is not None:
        shipped_path = Path(shipped_path)
        shipped_path = shipped_path if shipped_path.is_absolute() else PROJECT_ROOT / shipped_path
    model = model_class(**config["model_kwargs"])
    architecture = architecture_fingerprint(model)
    run = run_fingerprint(train_fn, data)
    cache_dir = Path(cache_dir)
    cache_path = _cache_path(cache_dir, config, architecture, run)
    quick = is_quick_mode() if quick is None else quick
    stand_in = quick_stand_in_config(config) if quick else None
    candidates = [(shipped_path, config), (cache_path, config)]
    if stand_in is not None:
        quick_path = cache_dir / f"quick{stand_in['num_steps']}_{_cache_path(cache_dir, stand_in, architecture, run).name}"
        candidates.append((quick_path, stand_in))
    for path, wanted in candidates:
        if path is None:
            continue
        if not path.is_file():
            if path == shipped_path:
                why = f"the shipped checkpoint {_shown(shipped_path)} is missing"
            continue
        try:
            payload = load_torch_file(path)   # damaged bytes (CRC) or tensors that do not fit: CorruptFileError
            reasons = checkpoint_mismatch(payload, wanted, architecture, run)
            if not reasons:
                load_weights(model, payload, path)
        except CorruptFileError as exc:
            print(f"{exc}; it will be rebuilt" if path != shipped_path else str(exc))
            if path != shipped_path:
                path.unlink(missing_ok=True)
            else:
                why = f"the shipped checkpoint {_shown(shipped_path)} cannot be read"
            continue
        if not reasons:
            print(f"loaded {path.name} ({payload['steps']} steps, final loss {payload['final_loss']:.4f})")
            if payload.get("quick_stand_in"):
                print(_stand_in_line(payload, path))
            return model.to(device).eval(), payload
        if path == shipped_path:
            why = f"{_shown(shipped_path)} does not fit: " + "; ".join(reasons)
    check_writable(cache_dir)
    if stand_in is not None:
        print(f"training a quick-mode stand-in because {why}")
        record = {"quick_stand_in": True, "quick_steps": stand_in["num_steps"], "full_num_steps": config["num_steps"]}
        model, payload = train_from_config(stand_in, model_class, train_fn, data, quick_path, device=device,
                                           progress=progress, record=record)
        print(_stand_in_line(payload, quick_path))
        return model, payload
    kwargs, _ = training_settings(config, device)
    per_step = seconds_per_step(model, train_fn, data.to(device), _schedule_for(config, device), kwargs)
    estimate = (f"{config['num_steps']} steps at {per_step:.2f} s/step take about "
                f"{_duration(per_step * config['num_steps'])} on {hardware_name(device)} "
                f"({'bf16 autocast' if kwargs.get('bf16') else 'float32'}, timed after {WARM_STEPS} warm-up steps)")
    minutes = per_step * config["num_steps"] / 60
    if max_train_minutes is not None and minutes > max_train_minutes:
        enough = max(5, math.ceil(minutes * 1.2 / 5) * 5)        # the estimate with a margin, in steps of 5
        raise TrainingTooLong(
            f"not training: it would train because {why}, but {estimate}, more than max_train_minutes = "
            f"{max_train_minutes:g}. Two ways on: set MAX_TRAIN_MINUTES = {enough} in the config cell and re-run, "
            f"or {hint or ('undo the edit, so that the shipped model loads' if shipped_path else 'lower num_steps')}")
    print(f"training because {why}. {estimate}; "
          f"progress is saved every 2 min beside {cache_path.name}, so an interrupted run resumes")
    return train_from_config(config, model_class, train_fn, data, cache_path, device=device, progress=progress)
