"""Result files: every run that the README or a notebook quotes writes one; text reads it back.

A result file is `benchmarks/results/<YYYY-MM-DD>_<hardware tag>_<name>.json` (one run) or `.jsonl`
(one row per line, for runs that add rows one at a time, like a series of trials). Beside the
measured payload it holds what was measured, n, the seed, how the interval was made, the seconds the
run took, when (UTC), the hardware, the library versions and the git commit, so a number in the
text can be traced to the run that made it and compared only with numbers made the same way:

    path = write_result("quality_n2000", {"fid": 66.9, "fid_interval": [63.1, 70.8]}, n=2000, seed=0,
                        seconds=412.0, interval="95 % bootstrap over samples, 1000 resamples")
    result = latest_result("quality_n2000")
    print(result["fid"], "from", cite(result))   # benchmarks/results/2026-...json (n=2000, AMD EPYC, 2 cores, 2026-...)

The date in the file name is the run's UTC date; the hardware tag is "cpu", "mps" or the CUDA
device's name ("h200"), for the device the run measured on. Files written before this module
existed (the date and tag in their name, none of the keys below) read back too: what, date and
hardware then come from the file name.
"""

from __future__ import annotations

import base64
import datetime
import importlib.metadata
import json
import math
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import torch

from .environment import PROJECT_ROOT, get_device, is_quick_mode
from .files import atomic_write_bytes, folder_lock

RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"

# The keys a result file adds around the payload; a payload may not use them itself. "file" is set
# by the readers (the path the result was read from), never stored.
META_KEYS = ("what", "n", "seed", "interval", "seconds", "date", "quick_mode", "hardware", "versions", "git",
             "command", "file")

# name -> the command that (re)makes that result file, quoted by the error when it is missing. A
# script that starts writing a result registers its command here (or passes command= to the reader).
RESULT_COMMANDS = {
    "mlp_ladder": "python benchmarks/mlp_ladder.py",
    "samplers_paired_unet": "python benchmarks/samplers.py quality --model unet",
    "samplers_paired_laptop": "python benchmarks/samplers.py quality --model laptop",
    "laptop_recipe_trials": "python benchmarks/laptop_recipe.py trial --name NAME --budget 240 --n 500 "
                            "--log benchmarks/results/<date>_cpu_laptop_recipe_trials.jsonl",
    "guidance_headline": "python benchmarks/guidance_headline.py",
}

# Every result file read in this process, in order (scripts/readme_tables.py names those a table read
# when it cannot render them).
LOADED_FILES: list[str] = []

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
# <YYYY-MM-DD>_<tag>_<name>.json(l): the tag holds no underscore, so the name may.
_FILE = re.compile(r"(?P<date>\d{4}-\d{2}-\d{2})_(?P<tag>[a-z0-9-]+)_(?P<name>[a-z0-9][a-z0-9_-]*)\.(?P<ext>jsonl?)")


# ---------------------------------------------------------------------------------------------
# What made the numbers: hardware, versions, commit
# ---------------------------------------------------------------------------------------------


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:  # not Linux
        return ""


def _cpu_model(cpuinfo: str) -> str:
    match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    return (match.group(1).strip() if match else platform.processor()) or platform.machine() or "unknown CPU"


def _native_bf16(cpuinfo: str) -> bool | None:
    """True when the CPU computes bfloat16 natively (x86 flags avx512_bf16 / amx_bf16, Arm feature
    bf16), False when /proc/cpuinfo lists flags without them, None when there is no /proc/cpuinfo.
    Without it bf16 autocast still runs (converted in software), so its speed differs by machine."""
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[-1].split())
    if not flags:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def describe_hardware(device: str | torch.device | None = None) -> dict:
    """The machine a run measured on: the device it used (default: get_device()), the CPU model,
    the cores this process may use, torch's thread count, the CPU's vector capability as torch sees
    it, native bf16 yes/no, and the CUDA device's name if there is one."""
    device = get_device() if device is None else torch.device(device)
    cpuinfo = _cpuinfo()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cuda = None
    if torch.cuda.is_available():
        cuda = torch.cuda.get_device_name(device if device.type == "cuda" else 0)
    return {"device": device.type, "cpu": _cpu_model(cpuinfo), "cpu_cores": cores,
            "torch_threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": _native_bf16(cpuinfo), "cuda": cuda, "platform": platform.platform()}


def hardware_tag(hardware: dict) -> str:
    """The file-name tag of describe_hardware()'s dict: 'cpu', 'mps', or the CUDA device's name
    without the vendor ('NVIDIA H200' -> 'h200', 'NVIDIA GeForce RTX 4090' -> 'rtx-4090')."""
    if hardware.get("device") == "cuda" and hardware.get("cuda"):
        words = [w for w in re.split(r"[^a-z0-9]+", hardware["cuda"].lower()) if w not in ("", "nvidia", "geforce", "tesla")]
        return "-".join(words) or "cuda"
    return hardware.get("device") or "cpu"


def library_versions() -> dict:
    """Python's and the installed libraries' versions (None for one that is not installed), read
    from the package metadata so that nothing heavy is imported to learn them."""
    versions = {"python": platform.python_version(), "torch": str(torch.__version__)}
    for package in ("torchvision", "numpy", "diffusers"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def git_state() -> dict | None:
    """{"commit", "dirty"} of the project's checkout (dirty: tracked files differ from the commit,
    so the commit alone does not reproduce the run), or None outside a git checkout."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return None


def _default_command() -> str | None:
    """The script and arguments that run now, relative to the project ('python benchmarks/x.py --n 2000');
    None inside a notebook kernel, whose argv says nothing about the run."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is None or script.suffix != ".py" or "ipykernel" in script.name:
        return None
    try:
        script = script.resolve().relative_to(PROJECT_ROOT)
    except ValueError:
        pass
    return " ".join(["python", str(script), *sys.argv[1:]])


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _json_problem(value, where: str) -> str | None:
    """Why `value` cannot be stored as JSON as it is, naming where it sits; None when it can."""
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (f"{where} is {value}: JSON has no NaN or infinity; store None "
                                                  "and say why in another key")
    if isinstance(value, (list, tuple)):
        return next((p for i, v in enumerate(value) if (p := _json_problem(v, f"{where}[{i}]"))), None)
    if isinstance(value, dict):
        for key, v in value.items():
            if not isinstance(key, str):
                return f"{where} has the key {key!r} ({type(key).__name__}): JSON keys are strings"
            if (problem := _json_problem(v, f"{where}[{key!r}]")):
                return problem
        return None
    return (f"{where} is a {type(value).__name__}, which JSON cannot hold: store a number (float(x), x.item()), "
            "a string, a list or a dict")


# A payload key that holds a time (seconds, seconds_per_step, ddim50_s, digits_per_second): its numbers must be > 0.
_TIMING_KEY = re.compile(r"(seconds|_s|per_step|per_second)$")


def result_problems(result: dict) -> list[str]:
    """Why a result record (or one row of a series) cannot be quoted, each naming the field: n not
    an int >= 2; a number that is not finite; a time (a key such as seconds, seconds_per_step,
    digits_per_second) that is not positive; a measure ({"value", "low", "high"}) whose fields are
    not numbers, unless they are an explicit None with a "reason" beside them."""
    problems = []
    n = result.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 2):
        problems.append(f"n is {n!r} ({type(n).__name__}): it must be an int >= 2 (one sample has no spread), "
                        "or null for a run that draws no samples")

    def walk(value, where: str, key: str | None) -> None:
        if isinstance(value, dict):
            reason = isinstance(value.get("reason"), str) and value["reason"].strip()   # None is then explicit
            if "value" in value and ("low" in value or "high" in value):
                problems.extend(f"{where}.{f} is {value[f]!r}: a measure needs a number (or null with a 'reason')"
                                for f in ("value", "low", "high") if f in value and not (value[f] is None and reason)
                                and (isinstance(value[f], bool) or not isinstance(value[f], (int, float))))
            for k, v in value.items():
                walk(v, f"{where}.{k}" if where else str(k), str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]", key)
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{where} is {value}: not a finite number")
        elif key and _TIMING_KEY.search(key) and isinstance(value, (int, float)) and not isinstance(value, bool) \
                and value <= 0:
            problems.append(f"{where} is {value!r}: a time must be positive")

    walk(result, "", None)
    return problems


def _check_optional_int(name: str, value, low: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
        raise ValueError(f"{name} must be None or an int >= {low}, got {value!r}")


def _result_record(name: str, payload: dict, n, seed, seconds, interval, device, command) -> dict:
    """payload with the run's description added, after checking every argument."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"name must be lower-case letters, digits, '_' and '-' (it becomes part of a file name), "
                         f"got {name!r}")
    if not isinstance(payload, dict):
        raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
    clash = sorted(set(payload) & set(META_KEYS))
    if clash:
        raise ValueError(f"payload must not use the keys {clash}: the result file adds them (reserved: {list(META_KEYS)})")
    problem = _json_problem(payload, "payload")
    if problem:
        raise TypeError(f"cannot write the result {name!r}: {problem}")
    _check_optional_int("n", n, 2)
    _check_optional_int("seed", seed, 0)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"seconds must be a finite number > 0 (how long the run took), got {seconds!r}")
    problems = result_problems(payload)
    if problems:
        raise ValueError(f"cannot write the result {name!r}: " + "; ".join(problems))
    if interval is not None and (not isinstance(interval, str) or not interval.strip()):
        raise ValueError(f"interval must be None or a sentence saying how the interval was made "
                         f"(e.g. '95 % bootstrap over samples, 1000 resamples'), got {interval!r}")
    hardware = describe_hardware(device)
    return {"what": name, "n": n, "seed": seed, "interval": interval, "seconds": round(float(seconds), 3),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "quick_mode": is_quick_mode(), "hardware": hardware, "versions": library_versions(), "git": git_state(),
            "command": command if command is not None else _default_command(), **payload}


def _result_path(record: dict, results_dir, suffix: str) -> Path:
    folder = Path(results_dir) if results_dir is not None else RESULTS_DIR
    return folder / f"{record['date'][:10]}_{hardware_tag(record['hardware'])}_{record['what']}{suffix}"


def write_result(name: str, payload: dict, *, n: int | None, seed: int | None, seconds: float,
                 interval: str | None = None, device: str | torch.device | None = None, command: str | None = None,
                 results_dir: str | Path | None = None) -> Path:
    """Write one run's result to benchmarks/results/<UTC date>_<hardware tag>_<name>.json atomically
    (a killed write leaves the old file) and return its path. A second run of the same name on the
    same day and hardware replaces the first.

    payload: the measured values, JSON-serialisable (numbers, strings, lists, dicts; no tensors, no
    NaN), none of META_KEYS. n: the sample size the figures were measured at (None if there is
    none); seed: the seed of the run (None if unseeded); seconds: how long it ran; interval: how
    the intervals in the payload were made (None if it holds none). device: the device measured on
    (default get_device(); it sets the hardware tag). command: how to make the file again (default:
    the running script and its arguments)."""
    record = _result_record(name, payload, n, seed, seconds, interval, device, command)
    path = _result_path(record, results_dir, ".json")
    atomic_write_bytes(path, (json.dumps(record, indent=1, ensure_ascii=False, allow_nan=False) + "\n").encode())
    return path


def append_result_row(name: str, row: dict, *, n: int | None, seed: int | None, seconds: float,
                      interval: str | None = None, device: str | torch.device | None = None,
                      command: str | None = None, results_dir: str | Path | None = None) -> Path:
    """Add one row (one trial of a series) to benchmarks/results/<UTC date>_<tag>_<name>.jsonl and
    return the path. Each row carries the same description as write_result's file, so a row stands
    on its own; the file is rewritten atomically with the new line, so a killed run never leaves a
    half line, and under a lock on its folder, so rows that processes append at once are all kept."""
    record = _result_record(name, row, n, seed, seconds, interval, device, command)
    path = _result_path(record, results_dir, ".jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(path.parent, windows_file=".results.lock"):
        old = path.read_bytes() if path.is_file() else b""
        if old and not old.endswith(b"\n"):
            old += b"\n"
        atomic_write_bytes(path, old + (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode())
    return path


def images_to_json(images: torch.Tensor) -> dict:
    """A few images (N, C, H, W) in [-1, 1] as a JSON-storable dict, so a result file can carry the
    grid a notebook shows: each pixel rounded to one of 256 grey levels (uint8), base64-encoded in
    one string (784 bytes per MNIST digit, not 784 lines of a JSON list). images_from_json reverses it."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"images must be a float tensor (N, C, H, W) in [-1, 1], got "
                         f"{type(images).__name__} {tuple(getattr(images, 'shape', ()))}")
    levels = ((images.detach().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)   # (N, C, H, W) in 0..255
    return {"shape": list(levels.shape), "uint8_base64": base64.b64encode(levels.numpy().tobytes()).decode("ascii")}


def images_from_json(stored: dict) -> torch.Tensor:
    """The images (N, C, H, W) in [-1, 1] that images_to_json stored (to 1/255 of the range)."""
    try:
        shape, data = stored["shape"], base64.b64decode(stored["uint8_base64"], validate=True)
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"not images stored by images_to_json ({type(exc).__name__}: {exc})") from None
    if math.prod(shape) != len(data):
        raise ValueError(f"stored images of shape {shape} need {math.prod(shape)} bytes, got {len(data)}")
    levels = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(*shape)   # (N, C, H, W)
    return levels.float() / 127.5 - 1


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _shown_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def _load_result_file(path: Path) -> dict:
    """One result file as a dict: a .json file's record, or for a .jsonl file {"what", "date", "rows"}
    (the rows in file order). Keys a file written before this module lacks (what, date, hardware)
    come from its name; "file" is the path it was read from."""
    path = Path(path)
    parts = _FILE.fullmatch(path.name)
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            dates = [r["date"] for r in rows if isinstance(r.get("date"), str)]
            result = {"rows": rows}
            if dates:
                result["date"] = max(dates)
            ns = sorted({r["n"] for r in rows if isinstance(r.get("n"), int)})
            if len(ns) == 1:
                result["n"] = ns[0]
        else:
            result = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the result file {_shown_path(path)} is not valid JSON ({exc}); it was cut short or edited "
                         "by hand: make it again") from None
    if not isinstance(result, dict):
        raise ValueError(f"the result file {_shown_path(path)} holds a {type(result).__name__}, not a dict")
    if parts:
        result.setdefault("what", parts["name"])
        result.setdefault("date", parts["date"])
        result.setdefault("hardware", parts["tag"])
    problems = [f"row {i + 1}: {p}" for i, row in enumerate(result["rows"]) for p in result_problems(row)] \
        if path.suffix == ".jsonl" else result_problems(result)
    if problems:
        raise ValueError(f"the result file {_shown_path(path)} cannot be quoted: " + "; ".join(problems))
    result["file"] = _shown_path(path)
    LOADED_FILES.append(result["file"])
    return result


def latest_result(name: str, *, hardware: str | None = None, command: str | None = None,
                  results_dir: str | Path | None = None) -> dict:
    """The newest result file for `name` (by the date stored in it; files that store none, by the
    date in their name), optionally only those of one hardware tag ('cpu', 'h200'). Raises
    FileNotFoundError naming the folder and the command that makes the file (`command`, else
    RESULT_COMMANDS[name])."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"name must be lower-case letters, digits, '_' and '-', got {name!r}")
    folder = Path(results_dir) if results_dir is not None else RESULTS_DIR
    candidates = []
    for path in folder.glob(f"*_{name}.json*"):
        parts = _FILE.fullmatch(path.name)
        if parts and parts["name"] == name and (hardware is None or parts["tag"] == hardware):
            candidates.append(_load_result_file(path))
    if not candidates:
        make = command or RESULT_COMMANDS.get(name) or "the script that measures it (none is registered in " \
                                                           "notebook_support.results.RESULT_COMMANDS)"
        which = f"<date>_{hardware or '<hardware>'}_{name}.json or .jsonl"
        raise FileNotFoundError(f"no result file for {name!r} in {_shown_path(folder)}/ (looked for {which}); "
                                f"make it with: {make}")
    return max(candidates, key=lambda r: (str(r.get("date", "")), r["file"]))


def latest_results(prefix: str, *, hardware: str | None = None, results_dir: str | Path | None = None) -> dict[str, dict]:
    """{name: the newest result of that name} for every result name starting with `prefix` (e.g. all
    runs of one benchmark), names sorted; {} when there is none."""
    if not isinstance(prefix, str) or not _NAME.fullmatch(prefix):
        raise ValueError(f"prefix must be lower-case letters, digits, '_' and '-', got {prefix!r}")
    folder = Path(results_dir) if results_dir is not None else RESULTS_DIR
    names = {parts["name"] for path in folder.glob(f"*_{prefix}*.json*")
             if (parts := _FILE.fullmatch(path.name)) and parts["name"].startswith(prefix)
             and (hardware is None or parts["tag"] == hardware)}
    return {name: latest_result(name, hardware=hardware, results_dir=folder) for name in sorted(names)}


def read_result(name_or_path: str | Path, *, results_dir: str | Path | None = None) -> dict:
    """A result by file (a path, or a file name inside benchmarks/results/) or by name (then the
    newest, as latest_result)."""
    folder = Path(results_dir) if results_dir is not None else RESULTS_DIR
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith((".json", ".jsonl")) or "/" in text:
        for path in (Path(text), PROJECT_ROOT / text, folder / text):
            if path.is_file():
                return _load_result_file(path)
        raise FileNotFoundError(f"no result file {text} (looked in the working folder, the project and "
                                f"{_shown_path(folder)}/)")
    return latest_result(text, results_dir=folder)


def _hardware_label(result: dict) -> str:
    hardware = result.get("hardware")
    if isinstance(hardware, dict):
        if hardware.get("device") == "cuda" and hardware.get("cuda"):
            return hardware["cuda"]
        label = f"{hardware.get('cpu', 'CPU')}, {hardware.get('cpu_cores')} cores"
        return f"Apple MPS, {label}" if hardware.get("device") == "mps" else label
    return str(hardware) if hardware else "hardware not recorded"


def cite(result: dict) -> str:
    """Which run made a number, for a notebook or the README to print beside it:
    'benchmarks/results/<file> (n=2000, NVIDIA H200, 2026-11-29)'."""
    if not isinstance(result, dict) or "file" not in result:
        raise TypeError("cite needs a dict from read_result or latest_result (it names the file it came from)")
    if result.get("n") is not None:
        size = f"n={result['n']}"
    elif "rows" in result:
        ns = sorted({r["n"] for r in result["rows"] if isinstance(r.get("n"), int)})
        size = f"{len(result['rows'])} rows" + (f", n={'/'.join(map(str, ns))}" if ns else "")
    else:
        size = "no n"
    quick = ", QUICK MODE: not for citing" if result.get("quick_mode") else ""
    return f"{result['file']} ({size}, {_hardware_label(result)}, {str(result.get('date', 'undated'))[:10]}{quick})"
