"""Checkpoint files and what makes them safe to reuse: config validation, architecture fingerprints."""

from __future__ import annotations

import dis
import functools
import hashlib
import inspect
import io
import json
import math
import marshal
import os
import re
import sys
import textwrap
import tokenize
import types
from pathlib import Path

import torch
import torch.nn as nn

from .environment import PROJECT_ROOT
from .files import CorruptFileError, atomic_torch_save, load_torch_file

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
    "seed": lambda v: _number_problem("seed", v, 0, 2**64 - 1, integer=True),   # torch seeds are 64-bit
    "warmup_steps": lambda v: _number_problem("warmup_steps", v, 0, integer=True),
    "lr_decay": lambda v: None if v in ("none", "cosine") else f"lr_decay must be 'none' or 'cosine', got {v!r}",
    "min_snr_gamma": lambda v: None if v is None else _number_problem("min_snr_gamma", v, 0, low_open=True),
    "bf16": lambda v: None if isinstance(v, bool) else f"bf16 must be true or false, got {v!r}",
    "label_dropout": lambda v: _number_problem("label_dropout", v, 0, 1),
    # a power-function EMA's width: gamma = 0 (a plain running mean) has the widest, 12 ** -0.5
    "ema_sigma_rel": lambda v: None if v is None else _number_problem(
        "ema_sigma_rel", v, 0, 12 ** -0.5, low_open=True, high_open=True),
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


def _training_keys_problem(config: dict, train_fn) -> str | None:
    """A wrapper written as `def f(*args, **kwargs)` hides which keywords it passes on: say so,
    instead of calling every training key of a valid config unknown."""
    params = inspect.signature(train_fn).parameters.values()
    var_keyword = [p.name for p in params if p.kind == p.VAR_KEYWORD]
    named = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    unread = sorted(set(config) - set(BASE_KEYS) - named)
    if not (var_keyword and unread):
        return None
    name = getattr(inspect.unwrap(train_fn), "__name__", "the training function")
    return (f"the training keys {unread} could not be read from {name}: it takes **{var_keyword[0]}, so its "
            f"signature does not say which keywords it accepts (a wrapper of train written with *args, **kwargs?). "
            f"Decorate the wrapper with @functools.wraps(train), which gives it train's signature, or bind "
            f"arguments with functools.partial(train, ...)")


def _warmup_problem(config: dict) -> str | None:
    warmup, steps = config.get("warmup_steps", 0), config.get("num_steps")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (warmup, steps)) or warmup <= steps:
        return None   # a missing or mistyped key is reported on its own
    return (f"warmup_steps ({warmup}) must not exceed num_steps ({steps}): the learning rate would still be "
            "rising at the last step, so most of the run trains at a fraction of lr")


def device_memory_bytes(device: torch.device | str) -> int | None:
    """The memory of `device`: the GPU's own, else the machine's RAM (the smaller of the physical
    memory and a cgroup limit, as in a container); None where neither can be read."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows)
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        total = min(total, int(limit)) if limit.isdigit() else total
    except OSError:
        pass
    return total


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def _activation_bytes_per_image(model: nn.Module, image_shape: tuple) -> int:
    """Bytes of every module's output for one image (float32): a lower bound on what backward keeps."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        total += sum(o.numel() * 4 for o in outputs if isinstance(o, torch.Tensor))

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *image_shape), torch.zeros(1, dtype=torch.long))   # (1, C, H, W), t = 0
    finally:
        for hook in hooks:
            hook.remove()
    return total


def _memory_problem(config: dict, model_class: type, meta_model: nn.Module, image_shape: tuple,
                    device: torch.device, batch_size: int) -> str | None:
    """Refuse sizes that cannot be allocated on `device`, naming the key. Each estimate is a lower
    bound of what training needs (the schedule's float64 tables; weights, gradients, Adam's two
    moments and the EMA copy in float32; every layer's output for the batch), compared with the
    device's whole memory, so a config that fits is never refused."""
    total = device_memory_bytes(device)
    if total is None:
        return None
    needs = {"num_timesteps": 16 * 8 * config["num_timesteps"],
             "model_kwargs": 5 * 4 * sum(p.numel() for p in meta_model.parameters())}
    image_bytes = 4 * math.prod(image_shape)
    needs["batch_size"] = batch_size * 4 * image_bytes   # x0, noise, x_t and the prediction
    if sum(needs.values()) <= total:   # the model fits: measure its activations on one real image
        try:
            needs["batch_size"] = max(needs["batch_size"],
                                      batch_size * _activation_bytes_per_image(model_class(**config["model_kwargs"]),
                                                                               image_shape))
        except Exception:   # a model that cannot run a 1-image probe keeps the input-size bound
            pass
    if sum(needs.values()) <= total:
        return None
    key = max(needs, key=needs.get)
    what = {"num_timesteps": f"num_timesteps {config['num_timesteps']}: the schedule's tables alone need",
            "model_kwargs": f"model_kwargs {config['model_kwargs']}: {model_class.__name__}'s weights, gradients, "
                            "Adam moments and EMA copy need",
            "batch_size": f"batch_size {batch_size}: one training step's activations need"}[key]
    return (f"{what} at least {_gb(needs[key])}, more than the {_gb(total)} of memory of {device.type} here "
            f"({', '.join(f'{k} {_gb(v)}' for k, v in needs.items())}); lower {key}")


def _build_on_meta(model_class: type, kwargs: dict) -> nn.Module:
    """model_class(**kwargs) with shapes but no memory, so a huge width is refused, not allocated.
    Sizes beyond what a tensor can hold raise ValueError."""
    try:
        with torch.device("meta"):
            return model_class(**kwargs)
    except (NotImplementedError, RuntimeError) as exc:
        if "overflow" in str(exc).lower():
            raise ValueError(f"sizes too large for any tensor ({exc})") from None
        return model_class(**kwargs)   # an __init__ that computes with its tensors: build it for real


def validate_config(config: dict, model_class: type, train_fn, *, image_shape: tuple | None = None,
                    device: torch.device | str | None = None) -> dict:
    """Check a denoiser config once, up front, and return it normalized (see normalize_config).

    Allowed keys: BASE_KEYS plus the keyword arguments of `train_fn` (num_steps, lr, ...);
    model_kwargs must name arguments of `model_class`, which is built once (without memory) to let
    it reject nonsense sizes; warmup_steps may not exceed num_steps. Given the data's
    `image_shape` and the `device`, sizes whose memory the device does not have are refused too
    (num_timesteps, model_kwargs, batch_size). Raises one ValueError that lists every problem and
    the allowed keys.
    """
    config = normalize_config(config)
    train_params = [p for p in inspect.signature(train_fn).parameters.values()
                    if p.name not in RUNNER_ARGS and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    train_keys = {p.name for p in train_params}
    problems = [f"missing key {key!r}: {what}" for key, what in BASE_KEYS.items() if key not in config]
    problems += [f"missing key {p.name!r} ({getattr(train_fn, '__name__', 'the training function')} has no default for it)"
                 for p in train_params if p.default is inspect.Parameter.empty and p.name not in config]
    unreadable = _training_keys_problem(config, train_fn)
    problems += [unreadable] if unreadable else [f"unknown key {key!r}"
                                                 for key in sorted(set(config) - set(BASE_KEYS) - train_keys)]
    if "model" in config and not (isinstance(config["model"], str) and config["model"].isidentifier()):
        problems.append(f"model must be a short name such as 'unet', got {config['model']!r}")
    if "schedule" in config and config["schedule"] not in ("linear", "cosine"):
        problems.append(f"schedule must be 'linear' or 'cosine', got {config['schedule']!r}")
    if "num_timesteps" in config:
        problems.append(_number_problem("num_timesteps", config["num_timesteps"], 2, integer=True))
    for key, check in TRAIN_KEY_CHECKS.items():
        if key in config and key in train_keys:
            problems.append(check(config[key]))
    problems.append(_warmup_problem(config))
    kwargs, meta_model = config.get("model_kwargs"), None
    if "model_kwargs" in config and not isinstance(kwargs, dict):
        problems.append(f"model_kwargs must be a dict, got {type(kwargs).__name__}")
    elif isinstance(kwargs, dict):
        accepted = _accepted_kwargs(model_class)
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            problems.append(f"model_kwargs has unknown keys {unknown}; {model_class.__name__} accepts {accepted}")
        else:
            try:
                meta_model = _build_on_meta(model_class, kwargs)
            except (ValueError, TypeError) as exc:
                problems.append(f"{model_class.__name__}(**model_kwargs) refused: {exc}")
    problems = [p for p in problems if p]
    if not problems and meta_model is not None and image_shape is not None and device is not None:
        param = inspect.signature(train_fn).parameters.get("batch_size")
        batch_size = config.get("batch_size", 1 if param is None or param.default is param.empty else param.default)
        problems.append(_memory_problem(config, model_class, meta_model, tuple(image_shape), torch.device(device),
                                        batch_size))
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
    """The code of `source` as a token stream, one logical line per line, indented by block depth:
    comments, blank lines, line wrapping, backslash continuations, the spaces between tokens and
    the docstrings of functions and classes leave it unchanged; any other edit changes it. The same
    on Python 3.10 to 3.13: an f-string (one STRING token before 3.12, FSTRING_START ... FSTRING_END
    from 3.12 on) enters as its source text."""
    source = textwrap.dedent(source)
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    fstring_start, fstring_end = getattr(tokenize, "FSTRING_START", -1), getattr(tokenize, "FSTRING_END", -1)
    lines, words, depth, nested, opened = [], [], 0, 0, None
    header = docstring_allowed = False       # the last logical line opened a def/class body; an INDENT followed
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            kind = token.type
            if kind == fstring_start:
                nested, opened = nested + 1, opened if nested else token.start
            elif kind == fstring_end:
                nested -= 1
                if not nested:                 # the whole f-string, as written
                    words.append(("f", source[starts[opened[0] - 1] + opened[1]:starts[token.end[0] - 1] + token.end[1]]))
            elif nested or kind in (tokenize.COMMENT, tokenize.NL, tokenize.ENDMARKER):
                continue
            elif kind == tokenize.INDENT:
                depth, docstring_allowed = depth + 1, header
            elif kind == tokenize.DEDENT:
                depth, header, docstring_allowed = depth - 1, False, False
            elif kind == tokenize.NEWLINE:
                first = [w for _, w in words[:2]]
                is_docstring = docstring_allowed and all(k == "s" for k, _ in words)
                if not is_docstring:
                    lines.append("  " * depth + " ".join(w for _, w in words))
                header = (first[:1] in (["def"], ["class"]) or first == ["async", "def"]) and words[-1][1] == ":"
                words, docstring_allowed = [], False
            elif kind == tokenize.STRING:      # before 3.12 an f-string is a STRING too: not a docstring
                prefix = token.string[:token.string.index(token.string[-1])].lower()
                words.append(("f" if "f" in prefix else "s", token.string))
            else:
                words.append(("o", token.string))
    except (tokenize.TokenError, IndentationError, SyntaxError):   # not complete code (a lambda's line): as text
        return "\n".join(line.rstrip() for line in source.splitlines() if line.strip())
    return "\n".join(lines)


def _is_project_file(file) -> bool:
    return file is not None and Path(file).resolve().is_relative_to(PROJECT_ROOT) and \
        "site-packages" not in Path(file).parts


def _is_project_code(obj) -> bool:
    """Defined in a notebook (module __main__) or in a module under the project root."""
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    if module is None or module.__name__ == "__main__":
        return module is not None
    return _is_project_file(getattr(module, "__file__", None))


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


def _called(function) -> list:
    """The classes and functions `function` can call by name: globals it names, attributes it
    names of project modules it uses (`du.diffusion_loss`), and functions in its closure."""
    names, globals_ = _code_names(function.__code__), function.__globals__
    found = [globals_[n] for n in names if isinstance(globals_.get(n), (type, types.FunctionType))]
    for module in {globals_[n] for n in names if isinstance(globals_.get(n), types.ModuleType)}:
        if _is_project_file(getattr(module, "__file__", None)):
            found += [getattr(module, n) for n in names if isinstance(getattr(module, n, None), (type, types.FunctionType))]
    for cell in function.__closure__ or ():
        try:
            found += [cell.cell_contents] if isinstance(cell.cell_contents, (type, types.FunctionType)) else []
        except ValueError:  # an empty cell
            pass
    return found


# Module-level values that enter the key when a keyed function reads them: plain values, and tuples,
# frozensets, lists and dicts of plain values (a table of numbers read by the code changes what it
# does as a scalar does; its value when the key is taken counts). Anything else (a tensor, a device,
# a model) is state, not a constant, and stays out.
PLAIN_TYPES = (int, float, complex, str, bytes, bool, type(None))


def constant_text(value, _depth: int = 0) -> str | None:
    """A text that equals another's exactly when two plain values are equal (None for any other
    value): repr for scalars (exact types: numpy's float64 is not plain), containers element by
    element, frozensets and dicts sorted, so it is the same in every process and Python version."""
    if type(value) in PLAIN_TYPES:
        return repr(value)
    if _depth > 8 or type(value) not in (tuple, frozenset, list, dict):
        return None
    if type(value) is dict:
        items = [(constant_text(k, _depth + 1), constant_text(v, _depth + 1)) for k, v in value.items()]
        return None if any(None in item for item in items) else "{" + ", ".join(f"{k}: {v}" for k, v in sorted(items)) + "}"
    texts = [constant_text(v, _depth + 1) for v in value]
    if None in texts:
        return None
    if type(value) is frozenset:
        return "frozenset({" + ", ".join(sorted(texts)) + "})"
    return ("(" + ", ".join(texts) + ("," if len(texts) == 1 else "") + ")") if type(value) is tuple \
        else "[" + ", ".join(texts) + "]"


def _read_names(code: types.CodeType) -> tuple[set[str], set[str]]:
    """(the global names `code` loads, the attribute names it loads), nested functions included."""
    globals_, attributes = set(), set()
    for instruction in dis.get_instructions(code):
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
            globals_.add(instruction.argval)
        elif instruction.opname in ("LOAD_ATTR", "LOAD_METHOD", "LOAD_SUPER_ATTR"):
            attributes.add(instruction.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            more = _read_names(const)
            globals_, attributes = globals_ | more[0], attributes | more[1]
    return globals_, attributes


def _constants_read(function) -> dict:
    """{name: constant_text} of the module-level plain values `function` reads: globals it loads,
    and attributes it loads of project modules it uses (`du.SOME_LIMIT`)."""
    names, attributes = _read_names(function.__code__)
    globals_, found = function.__globals__, {}
    for name in names - {n for n in names if n.startswith("__")}:   # not __name__, __file__: they name the module
        text = constant_text(globals_.get(name)) if name in globals_ else None
        if text is not None:
            found[name] = text
        elif isinstance(globals_.get(name), types.ModuleType) and \
                _is_project_file(getattr(globals_[name], "__file__", None)):
            for attribute in attributes:
                text = constant_text(getattr(globals_[name], attribute, None)) \
                    if hasattr(globals_[name], attribute) else None
                if text is not None:
                    found[attribute] = text
    return found


def _constant_part(texts: set[str]) -> str:
    """A constant's entry in a fingerprint: "= <its value>" ("= sha256:..." for a long value); two
    different constants of one name in different modules enter together."""
    text = " | ".join(sorted(texts))
    return "= " + (text if len(text) <= 80 else "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:12])


def _code_parts(roots: list) -> dict:
    """{qualified name: digest of its source} for every project class method and function
    reachable from `roots` (classes and functions), following calls by name and base classes,
    and {name: "= value"} for every module-level plain value those functions read."""
    parts, todo, seen, constants = {}, list(roots), set(), {}
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
            todo += _called(function)
            for constant, text in _constants_read(function).items():
                constants.setdefault(constant, set()).add(text)
    return {**{name: _constant_part(texts) for name, texts in constants.items()}, **parts}


def architecture_fingerprint(model: nn.Module) -> dict:
    """What the weights mean: parameter names and shapes, the code (see _normalize_source: comments,
    docstrings and line wrapping ignored) of every project-defined class in the model and of every
    project function those classes call by name, and the module-level plain values they read, e.g.
    {"parameters": ..., "ResBlock.forward": ..., "SOME_CONSTANT": "= 1000.0"}.

    Editing a class in a notebook cell changes its entry, so weights trained for the old code
    are never loaded into the new one silently.
    """
    shapes = [(name, list(tensor.shape)) for name, tensor in model.state_dict().items()]
    parts = {"parameters": hashlib.sha256(json.dumps(shapes).encode()).hexdigest()[:12]}
    parts.update(_code_parts([type(m) for m in model.modules()]))
    return {"parts": dict(sorted(parts.items()))}


def unwrap_training_function(train_fn) -> tuple:
    """(the function that trains, positional arguments bound to it, keyword arguments bound to it):
    functools.partial layers are taken apart (an outer keyword wins, as in a call) and a wrapper
    made with functools.wraps counts as the function it wraps (it must not change what training
    does: bind arguments with functools.partial instead, which the key covers)."""
    function, args, kwargs = train_fn, [], {}
    while True:
        if isinstance(function, functools.partial):
            args, kwargs = list(function.args) + args, {**function.keywords, **kwargs}
            function = function.func
        elif hasattr(function, "__wrapped__"):
            function = function.__wrapped__
        else:
            return function, args, kwargs


def value_fingerprint(value):
    """A JSON-able stand-in for an argument that equals another's exactly when the values are
    equal: tensors and arrays by shape, dtype and a hash of every byte; functions by source."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().to("cpu").contiguous().reshape(-1)
        data = flat.view(torch.uint8).numpy() if flat.numel() else b""   # the raw bytes, any dtype
        return {"tensor": list(value.shape), "dtype": str(value.dtype), "sha256": hashlib.sha256(data).hexdigest()[:16]}
    if type(value).__module__ == "numpy" and hasattr(value, "tobytes"):   # arrays and numpy scalars
        return {"array": list(getattr(value, "shape", ())), "dtype": str(value.dtype),
                "sha256": hashlib.sha256(value.tobytes()).hexdigest()[:16]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [value_fingerprint(v) for v in value]
    if isinstance(value, dict):
        return {str(k): value_fingerprint(v) for k, v in value.items()}
    if isinstance(value, (types.FunctionType, type)):
        return {"code": value.__qualname__, "parts": _code_parts([value])}
    return {"object": type(value).__qualname__, "repr": re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))[:200]}


def training_fingerprint(train_fn) -> tuple[dict, dict]:
    """What the training function contributes to the weights, as (training code, bound arguments):
    the code (comments, docstrings and line wrapping ignored) of the training function and of every
    project function and class it calls (every method of a class and of its base classes), and the
    module-level plain values they read, e.g. {"parts": {"train": ..., "Trainer.train_step": ...,
    "EMA.update": ..., "diffusion_loss": ..., "FLOW_TIME_SCALE": "= 1000.0"}},
    and a fingerprint of every argument bound with functools.partial,
    e.g. {"labels": {"tensor": [60000], "dtype": "torch.int64", "sha256": ...}}."""
    function, args, kwargs = unwrap_training_function(train_fn)
    code = {"parts": dict(sorted(_code_parts([function]).items()))}
    bound = {**{f"positional argument {i}": v for i, v in enumerate(args)}, **kwargs}
    return code, json.loads(json.dumps({k: value_fingerprint(v) for k, v in sorted(bound.items())}))


def architecture_changes(stored: dict | None, current: dict, what: str = "architecture") -> list[str]:
    """Human-readable differences between two fingerprints (empty when they match)."""
    if not stored or "parts" not in stored:
        return [f"the checkpoint records no {what} fingerprint"]
    old, new = stored["parts"], current["parts"]
    changes = [(f"{name} changed from {old[name][2:]} to {new[name][2:]}" if "=" == old[name][0] == new[name][0]
                and "sha256:" not in old[name] + new[name] else f"{name} changed")
               for name in sorted(set(old) & set(new)) if old[name] != new[name]]
    changes += [f"{name} is new" for name in sorted(set(new) - set(old))]
    changes += [f"{name} is gone" for name in sorted(set(old) - set(new))]
    return [c.replace("parameters changed", "parameter names or shapes changed") for c in changes]


def _data_changes(stored: dict | None, current: dict) -> list[str]:
    if not stored:
        return ["the checkpoint records no data fingerprint"]
    changes = [f"stored {key} {stored.get(key)} vs wanted {current.get(key)}" for key in ("shape", "dtype")
               if stored.get(key) != current.get(key)]
    return changes or (["other values (same shape and dtype)"] if stored != current else [])


def _bound_changes(stored: dict | None, current: dict) -> list[str]:
    if stored is None:
        return [f"the checkpoint records none, wanted {sorted(current)}"] if current else []
    changes = [f"{name} differs" for name in sorted(set(stored) & set(current)) if stored[name] != current[name]]
    changes += [f"{name} is new" for name in sorted(set(current) - set(stored))]
    return changes + [f"{name} is gone" for name in sorted(set(stored) - set(current))]


def config_diff(stored: dict, wanted: dict) -> list[str]:
    """'key: stored X vs wanted Y' for every key whose (normalized) values differ."""
    stored, wanted = normalize_config(stored), normalize_config(wanted)
    return [f"{k}: stored {stored.get(k, '<missing>')!r} vs wanted {wanted.get(k, '<missing>')!r}"
            for k in sorted(set(stored) | set(wanted)) if stored.get(k, "<missing>") != wanted.get(k, "<missing>")]


def config_tag(config: dict, architecture: dict | None = None, run: dict | None = None) -> str:
    """A short stable hash of a config (and an architecture fingerprint, and a run's training
    code, bound arguments and data: see checkpoint_mismatch), for cache file names."""
    keyed = [normalize_config(config), architecture] + ([run] if run is not None else [])
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:10]


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


def checkpoint_mismatch(payload: dict, config: dict | None, architecture: dict | None,
                        run: dict | None = None) -> list[str]:
    """Why a loaded checkpoint does not fit this config and architecture (empty when it does),
    each reason headed by what differs: "config", "model code", and, given a `run` of
    {"training_code", "bound_arguments", "data"} (what notebook_support.training records),
    "training code", "bound arguments" and "data"."""
    reasons = []
    if config is not None:
        reasons += [f"config {d}" for d in config_diff(payload.get("config", {}), config)]
    if architecture is not None:
        reasons += [f"model code: {c}" for c in architecture_changes(payload.get("architecture"), architecture)]
    if run is not None:
        reasons += [f"training code: {c}" for c in architecture_changes(payload.get("training_code"),
                                                                       run["training_code"], "training-code")]
        reasons += [f"bound arguments: {c}" for c in _bound_changes(payload.get("bound_arguments"),
                                                                   run["bound_arguments"])]
        reasons += [f"data: {c}" for c in _data_changes(payload.get("data"), run["data"])]
    return reasons


def load_weights(model: nn.Module, payload: dict, path: str | Path) -> None:
    """Load a checkpoint's state dict into `model`, after checking that every tensor fits: a file whose
    config and fingerprint fit but whose tensors do not (damaged, or edited after it was written)
    raises CorruptFileError naming it, and leaves the model untouched."""
    state, expected = payload.get("state_dict"), model.state_dict()
    if not isinstance(state, dict):
        problems = [f"its state_dict is a {type(state).__name__}, not a dict"]
    else:
        problems = [f"{k} is missing" for k in expected if k not in state]
        problems += [f"{k} is unexpected" for k in state if k not in expected]
        problems += [f"{k} has shape {tuple(v.shape)} instead of {tuple(expected[k].shape)}" if isinstance(v, torch.Tensor)
                     else f"{k} is a {type(v).__name__}, not a tensor" for k, v in state.items()
                     if k in expected and not (isinstance(v, torch.Tensor) and v.shape == expected[k].shape)]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise CorruptFileError(f"the checkpoint {path} records this config and code, but its weights do not fit "
                               f"{type(model).__name__}: {'; '.join(problems[:3])}{more}. It was damaged or edited "
                               "after it was written; delete it")
    model.load_state_dict(state)


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
        load_weights(model, payload, path)
    return payload
