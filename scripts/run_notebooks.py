"""Run the notebook series top to bottom in place (README command 1) and log how long each took.

Each notebook is executed with `jupyter nbconvert --to notebook --execute --inplace` in full mode
(DDPM_QUICK unset; `--quick` sets it), one after the other: they share the CPU, so running two at
once would only slow both. After a notebook ran, its outputs are tidied the way a reader on
GitHub or nbviewer wants them, without changing what they say:

- consecutive stream outputs are merged and a text progress bar keeps only its last state
  (nbconvert's CoalesceStreamsPreprocessor: a bar that redrew 300 times is one line);
- widget outputs and the widget state are dropped (a frozen "0 %" widget is all a static page shows).

One line per notebook, "<notebook>: rc <exit code>, <seconds> s, finished <time>", goes to
benchmarks/results/<date>_cpu_notebooks_full_mode_<k>.txt (a new k per run), under a header with
the hardware and versions; `python scripts/readme_tables.py` turns the newest such log into the
README's table of times. A notebook that fails keeps its partial outputs, the log records its
exit code, and the script goes on with the next one and exits 1 at the end; so does a file that is
not a readable notebook (cut short, say): it is named and left as it is. The kernel's sockets are
encrypted where jupyter_client can do so (encryption_options), which also silences its warning that
it runs over TCP without encryption; every other warning is printed as before.

    python scripts/run_notebooks.py                        # all five, full mode
    python scripts/run_notebooks.py 3_unet.ipynb           # just one
    python scripts/run_notebooks.py --quick --no-log       # quick mode, no log file
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbconvert.preprocessors import CoalesceStreamsPreprocessor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from notebook_support.environment import PROJECT_ROOT  # noqa: E402

NOTEBOOKS = ["1_indepth_inspect.ipynb", "2_custom_mlp.ipynb", "3_unet.ipynb", "4_guidance.ipynb",
             "5_what_to_predict.ipynb"]
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
CELL_TIMEOUT_S = 3000   # per cell: a reader's slower CPU, never a hang (nbconvert's default is 30 s)


def tidy_outputs(path: Path) -> None:
    """Merge stream outputs (progress bars keep their last state) and drop widget outputs, in place."""
    notebook = nbformat.read(path, as_version=4)
    notebook, _ = CoalesceStreamsPreprocessor(enabled=True).preprocess(notebook, {})
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if WIDGET_MIME not in o.get("data", {})]
    notebook.metadata.pop("widgets", None)
    nbformat.write(notebook, path)


def hardware_line() -> str:
    import torch
    capability = torch.backends.cpu.get_cpu_capability()
    return (f"{os.cpu_count()}-core {platform.machine()} CPU ({capability}), torch {torch.__version__}, "
            f"python {platform.python_version()}")


def new_log_path(folder: Path, date: str) -> Path:
    """benchmarks/results/<date>_cpu_notebooks_full_mode[_k].txt with k above every existing one of that
    date, so the newest run sorts last (readme_tables reads the last)."""
    taken = [0 if p.stem.endswith("full_mode") else int(p.stem.rsplit("_", 1)[1])
             for p in folder.glob(f"{date}_cpu_notebooks_full_mode*.txt")]
    k = max(taken, default=-1) + 1
    return folder / (f"{date}_cpu_notebooks_full_mode.txt" if k == 0 else f"{date}_cpu_notebooks_full_mode_{k + (k == 1)}.txt")


def run_notebook(name: str, quick: bool) -> tuple[int, float]:
    """Execute one notebook in place; (exit code, seconds)."""
    env = dict(os.environ)
    if quick:
        env["DDPM_QUICK"] = "1"
    else:
        env.pop("DDPM_QUICK", None)
    started = time.perf_counter()
    rc = subprocess.run(["jupyter", "nbconvert", "--to", "notebook", "--execute", "--inplace",
                         f"--ExecutePreprocessor.timeout={CELL_TIMEOUT_S}", *encryption_options(), name],
                        cwd=PROJECT_ROOT, env=env).returncode
    seconds = time.perf_counter() - started
    try:
        tidy_outputs(PROJECT_ROOT / name)   # also after a failure: the partial outputs are what the reader debugs
    except Exception as exc:   # a file nbformat cannot read (cut short, not JSON): named, left as it is
        print(f"{name}: not a readable notebook, left as it is ({type(exc).__name__}: {str(exc)[:300]})", flush=True)
        rc = rc or 1
    return rc, seconds


def encryption_options() -> list[str]:
    """CurveZMQ encryption of the kernel's sockets where jupyter_client can provision it (8.7+, a pyzmq
    with libsodium, a kernelspec that declares it): the kernel then no longer warns, once per notebook,
    that it runs over TCP without encryption. Elsewhere no option, and that warning stays (it is true)."""
    try:
        import zmq
        from jupyter_client.manager import KernelManager
    except ImportError:
        return []
    if not (zmq.has("curve") and KernelManager.class_traits().get("transport_encryption")):
        return []
    return ["--KernelManager.transport_encryption=auto"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", default=NOTEBOOKS, help="default: all five, in order")
    parser.add_argument("--quick", action="store_true", help="DDPM_QUICK=1: fewer steps and samples")
    parser.add_argument("--no-log", action="store_true", help="do not write a log file")
    parser.add_argument("--note", default="", help="appended to the log's header line")
    args = parser.parse_args()
    unknown = [n for n in args.notebooks if not (PROJECT_ROOT / n).is_file()]
    if unknown:
        parser.error(f"no such notebook: {', '.join(unknown)} (choose from {', '.join(NOTEBOOKS)})")

    log = None
    if not args.no_log and not args.quick:
        date = datetime.date.today().isoformat()
        log = new_log_path(PROJECT_ROOT / "benchmarks" / "results", date)
        header = f"# {date} full mode (DDPM_QUICK unset), scripts/run_notebooks.py, {hardware_line()}"
        log.write_text(header + (f", {args.note}" if args.note else "") + "\n")
        print(f"logging to {log.relative_to(PROJECT_ROOT)}", flush=True)
    failed, total = [], 0.0
    for name in args.notebooks:
        print(f"{name}: running ({'quick' if args.quick else 'full'} mode) ...", flush=True)
        rc, seconds = run_notebook(name, args.quick)
        total += seconds
        line = f"{name}: rc {rc}, {seconds:.0f} s, finished {datetime.datetime.now():%H:%M:%S}"
        print(line, flush=True)
        if log is not None:
            with log.open("a") as f:
                f.write(line + "\n")
        if rc != 0:
            failed.append(name)
    summary = f"total: {total:.0f} s ({total / 60:.1f} min) for {len(args.notebooks)} notebooks"
    print(summary + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    if log is not None and len(args.notebooks) == len(NOTEBOOKS):
        with log.open("a") as f:
            f.write(summary + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
