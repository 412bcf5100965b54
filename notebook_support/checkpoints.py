"""Checkpoint files and what makes them safe to reuse: config validation, architecture fingerprints."""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import math
import marshal
import sys
import textwrap
import tokenize
import types
from pathlib import Path

import torch
import torch.nn as nn

from .environment import PROJECT_ROOT
from .files import atomic_torch_save, load_torch_file

# Keys every denoiser config holds besides the training function's own keyword arguments.
BASE_KEYS = {"model": "a name for the model, used in cache file names, e.g. 'unet'",
             "model_kwargs": "a dict of the model class's constructor arguments",
             "schedule": "'linear' or 'cosine'",
             "num_timesteps": "T, an int >= 2"}
# Arguments of a training function that the runner supplies itself, never the config.
RUNNER_ARGS = ("model", "schedule", "data", "labels", "progress", "resume")  # filled by the runner or the notebook, not the config


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------


def normalize_config(config: dict) -> dict:
    """The config as it reads back from JSON (tuples become lists), so a stored config and the
    notebook's compare equal whatever sequence type either used."""
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    try:
        return json.loads(json.dumps(config, sort_keys=True))
    except TypeError as exc:
        raise TypeError(f"config must hold only numbers, strings, lists and dicts: {exc}") from None


def _number_problem(name, value, low, high=None, *, integer=False, low_open=False, high_open=False):
    kind = "an int" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        return f"{name} must be {kind}, got {type(value).__name__} {value!r}"
    if not math.isfinite(value):
        return f"{name} must be finite, got {value!r}"
    if value < low or (low_open and value == low) or (high is not None and (
            value > high or (high_open and value == high))):
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        return f"{name} must lie in {left}{low}, {'inf' if high is None else high}{right}, got {value!r}"
    return None


# Checks for the training keys the series uses; a training function may accept more keys.
TRAIN_KEY_CHECKS = {
    "num_steps": lambda v: _number_problem("num_steps", v, 1, integer=True),
    "batch_size": lambda v: _number_problem("batch_size", v, 1, integer=True),
    "lr": lambda v: _number_problem("lr", v, 0, 1, low_open=True),
    "grad_clip": lambda v: _number_problem("grad_clip", v, 0, low_open=True),
    "ema_decay": lambda v: _number_problem("ema_decay", v, 0, 1, high_open=True),
    "seed": lambda v: _number_problem("seed", v, 0, integer=True),
    "warmup_steps": lambda v: _number_problem("warmup_steps", v, 0, integer=True),
    "lr_decay": lambda v: None if v in ("none", "cosine") else f"lr_decay must be 'none' or 'cosine', got {v!r}",
    "min_snr_gamma": lambda v: None if v is None else _number_problem("min_snr_gamma", v, 0, low_open=True),
    "bf16": lambda v: None if isinstance(v, bool) else f"bf16 must be true or false, got {v!r}",
    "label_dropout": lambda v: _number_problem("label_dropout", v, 0, 1),
}


def _accepted_kwargs(model_class: type) -> list[str]:
    """The keyword arguments model_class(...) accepts, following **kwargs into the base classes'
    __init__ (ConditionalUNet(num_classes, **unet_kwargs) accepts UNet's arguments too)."""
    names: list[str] = []
    for cls in model_class.__mro__:
        if "__init__" not in vars(cls):
            continue
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]   # without self
        names += [p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in names]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names


def validate_config(config: dict, model_class: type, train_fn) -> dict:
    """Check a denoiser config once, up front, and return it normalized (see normalize_config).

    Allowed keys: BASE_KEYS plus the keyword arguments of `train_fn` (num_steps, lr, ...);
    model_kwargs must name arguments of `model_class`, which is built once to let it reject
    nonsense sizes. Raises one ValueError that lists every problem and the allowed keys.
    """
    config = normalize_config(config)
    train_params = [p for p in inspect.signature(train_fn).parameters.values()
                    if p.name not in RUNNER_ARGS and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    train_keys = {p.name for p in train_params}
    problems = [f"missing key {key!r}: {what}" for key, what in BASE_KEYS.items() if key not in config]
    problems += [f"missing key {p.name!r} ({getattr(train_fn, '__name__', 'the training function')} has no default for it)"
                 for p in train_params if p.default is inspect.Parameter.empty and p.name not in config]
    problems += [f"unknown key {key!r}" for key in sorted(set(config) - set(BASE_KEYS) - train_keys)]
    if "model" in config and not (isinstance(config["model"], str) and config["model"].isidentifier()):
        problems.append(f"model must be a short name such as 'unet', got {config['model']!r}")
    if "schedule" in config and config["schedule"] not in ("linear", "cosine"):
        problems.append(f"schedule must be 'linear' or 'cosine', got {config['schedule']!r}")
    if "num_timesteps" in config:
        problems.append(_number_problem("num_timesteps", config["num_timesteps"], 2, integer=True))
    for key, check in TRAIN_KEY_CHECKS.items():
        if key in config and key in train_keys:
            problems.append(check(config[key]))
    kwargs = config.get("model_kwargs")
    if "model_kwargs" in config and not isinstance(kwargs, dict):
        problems.append(f"model_kwargs must be a dict, got {type(kwargs).__name__}")
    elif isinstance(kwargs, dict):
        accepted = _accepted_kwargs(model_class)
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            problems.append(f"model_kwargs has unknown keys {unknown}; {model_class.__name__} accepts {accepted}")
        else:
            try:
                model_class(**kwargs)
            except (ValueError, TypeError) as exc:
                problems.append(f"{model_class.__name__}(**model_kwargs) refused: {exc}")
    problems = [p for p in problems if p]
    if problems:
        allowed = sorted(set(BASE_KEYS) | train_keys)
        raise ValueError(f"the config has {len(problems)} problem(s):\n  - " + "\n  - ".join(problems)
                         + f"\nallowed keys: {allowed}")
    return config


# ---------------------------------------------------------------------------------------------
# Architecture fingerprints
# ---------------------------------------------------------------------------------------------


def _normalize_source(source: str) -> str:
    """Source without comments, blank lines, trailing spaces or common indentation."""
    source = textwrap.dedent(source)
    cut = {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                cut[token.start[0]] = token.start[1]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    lines = (line[:cut.get(number, len(line))].rstrip()
             for number, line in enumerate(source.splitlines(), start=1))
    return "\n".join(line for line in lines if line.strip())


def _is_project_code(obj) -> bool:
    """Defined in a notebook (module __main__) or in a module under the project root."""
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    if module is None or module.__name__ == "__main__":
        return module is not None
    file = getattr(module, "__file__", None)
    return file is not None and Path(file).resolve().is_relative_to(PROJECT_ROOT) and \
        "site-packages" not in Path(file).parts


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _function_digest(function) -> str:
    try:
        text = _normalize_source(inspect.getsource(function))
    except (OSError, TypeError):  # no source file: fall back to the compiled code
        text = marshal.dumps(function.__code__).hex()
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def architecture_fingerprint(model: nn.Module) -> dict:
    """What the weights mean: parameter names and shapes, and the source (comments and blank
    lines ignored) of every project-defined class in the model and of every project function
    those classes call by name, e.g. {"parameters": ..., "ResBlock.forward": ...}.

    Editing a class in a notebook cell changes its entry, so weights trained for the old code
    are never loaded into the new one silently.
    """
    shapes = [(name, list(tensor.shape)) for name, tensor in model.state_dict().items()]
    parts = {"parameters": hashlib.sha256(json.dumps(shapes).encode()).hexdigest()[:12]}
    todo = [type(m) for m in model.modules()]
    seen: set = set()
    while todo:
        obj = todo.pop()
        if obj in seen or not _is_project_code(obj):
            continue
        seen.add(obj)
        if isinstance(obj, type):
            functions = {f"{obj.__qualname__}.{name}": inspect.unwrap(getattr(value, "__func__", value))
                         for name, value in vars(obj).items()
                         if isinstance(getattr(value, "__func__", value), types.FunctionType)}
            todo += [base for base in obj.__bases__]
        else:
            functions = {obj.__qualname__: obj}
        for name, function in functions.items():
            parts[name] = _function_digest(function)
            globals_ = function.__globals__
            todo += [globals_[n] for n in _code_names(function.__code__)
                     if isinstance(globals_.get(n), (type, types.FunctionType))]
    return {"parts": dict(sorted(parts.items()))}


def architecture_changes(stored: dict | None, current: dict) -> list[str]:
    """Human-readable differences between two fingerprints (empty when they match)."""
    if not stored or "parts" not in stored:
        return ["the checkpoint records no architecture fingerprint"]
    old, new = stored["parts"], current["parts"]
    changes = [f"{name} changed" for name in sorted(set(old) & set(new)) if old[name] != new[name]]
    changes += [f"{name} is new" for name in sorted(set(new) - set(old))]
    changes += [f"{name} is gone" for name in sorted(set(old) - set(new))]
    return [c.replace("parameters changed", "parameter names or shapes changed") for c in changes]


def config_diff(stored: dict, wanted: dict) -> list[str]:
    """'key: stored X vs wanted Y' for every key whose (normalized) values differ."""
    stored, wanted = normalize_config(stored), normalize_config(wanted)
    return [f"{k}: stored {stored.get(k, '<missing>')!r} vs wanted {wanted.get(k, '<missing>')!r}"
            for k in sorted(set(stored) | set(wanted)) if stored.get(k, "<missing>") != wanted.get(k, "<missing>")]


def config_tag(config: dict, architecture: dict | None = None) -> str:
    """A short stable hash of a config (and an architecture fingerprint), for cache file names."""
    text = json.dumps([normalize_config(config), architecture], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


# ---------------------------------------------------------------------------------------------
# Checkpoint files
# ---------------------------------------------------------------------------------------------


def save_checkpoint(path: str | Path, model: nn.Module, config: dict, architecture: dict | None = None,
                    **extra) -> Path:
    """Save {state_dict, config, architecture, versions, **extra} atomically; extra holds plain
    values only (numbers, strings, lists, dicts), so the file loads with weights_only=True."""
    import torchvision

    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": normalize_config(config),
        "architecture": architecture if architecture is not None else architecture_fingerprint(model),
        "versions": {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
                     "python": sys.version.split()[0]},
        **extra,
    }
    atomic_torch_save(payload, Path(path))
    return Path(path)


def checkpoint_mismatch(payload: dict, config: dict | None, architecture: dict | None) -> list[str]:
    """Why a loaded checkpoint does not fit this config and architecture (empty when it does)."""
    reasons = []
    if config is not None:
        reasons += [f"config {d}" for d in config_diff(payload.get("config", {}), config)]
    if architecture is not None:
        reasons += [f"code: {c}" for c in architecture_changes(payload.get("architecture"), architecture)]
    return reasons


def load_checkpoint(path: str | Path, model: nn.Module | None = None, config: dict | None = None,
                    map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint (weights_only); when `config` is given its stored config must equal it,
    when `model` is given its architecture must match and the weights are loaded into it.
    Raises ValueError naming the file and every difference."""
    path = Path(path)
    payload = load_torch_file(path, map_location)
    if not isinstance(payload, dict) or "state_dict" not in payload or "config" not in payload:
        raise ValueError(f"{path} is not a checkpoint written by save_checkpoint")
    architecture = architecture_fingerprint(model) if model is not None else None
    reasons = checkpoint_mismatch(payload, config, architecture)
    if reasons:
        raise ValueError(f"checkpoint {path} does not fit: " + "; ".join(reasons))
    if model is not None:
        model.load_state_dict(payload["state_dict"])
    return payload
