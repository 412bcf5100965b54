"""Every edit a notebook advertises works: each is executed, in quick mode, and must run without error.

The manifest, tests/advertised_edits.json, is a JSON list of entries, one per advertised edit:

    {"notebook": "3_unet.ipynb",             # a notebook of the series
     "name": "laptop preset",                # short; unique within its notebook (test id: "3_unet:laptop preset")
     "advertised": "PRESET = \\"laptop\\"",    # text that appears in the notebook's markdown
     "inject": "PRESET = \\"laptop\\"",        # Python run in a new cell right after the `parameters` cell
     "replace": [["old code", "new code"]],  # optional: exact substitutions in code cells (each `old` once)
     "bullet": "Train the laptop preset"}    # optional: the first words of the "What to try next" bullet

What is checked:

(a) The manifest: a list of objects with exactly these keys (the first four required, all non-empty
    strings but `inject`, which may be "" when `replace` makes the edit; `replace` a list of [old, new]
    string pairs with `old` non-empty; `bullet` a non-empty string),
    unique (notebook, name) pairs, and only notebooks that exist. An empty manifest passes.
(b) Each entry's `advertised` text appears in its notebook's markdown (runs of whitespace, such as
    a line wrap, compare equal to one space).
(c) Each notebook has exactly one code cell tagged `parameters` (cell metadata `"tags":
    ["parameters"]`, the papermill convention) and a "What to try next" section: the markdown from a
    heading whose text contains "What to try next" (any level, any case) to the next heading of the
    same or a higher level. THE BULLET RULE: every top-level bullet of that section (a line starting
    with "- ", "* " or "1. ") must be named by at least one entry of its notebook, and an entry names
    a bullet by its `bullet` key: the bullet's text, with the list marker removed and whitespace
    collapsed, starts with the entry's `bullet` (markdown kept as written, e.g. backticks). Each
    `bullet` key must name exactly one bullet of its notebook, so a reworded bullet fails the test
    instead of silently losing its entry. A bullet that is not a notebook edit (a shell command, a
    benchmark run) belongs in RESULTS.md's prose, not in "What to try next".
(d) One test per entry: its notebook is read with nbformat, a new code cell holding `inject` goes right
    after the `parameters` cell, every `replace` pair is applied (an `old` that does not occur exactly
    once in the code cells fails: the manifest drifted from the notebook), and the result is executed
    with nbclient in quick mode (DDPM_QUICK=1), the kernel's working folder the project root and a
    timeout per cell. Nothing is written to the notebook file. A failure shows the failing cell's source
    and its traceback.

Throughput: the first test of (d) executes every selected entry (all of them, or those that `-k`
leaves) through a pool of EDIT_TEST_WORKERS kernels (default 2) with EDIT_TEST_THREADS torch threads
each (default 1: OMP_NUM_THREADS / MKL_NUM_THREADS), and each test then asserts its own entry's result.
Measured on the 2-core CPU (AMD EPYC, 2026-12-06), two quick-mode runs of one notebook: notebook 4,
44 s with 2 kernels x 1 thread against 55 s with 1 kernel x 2 threads (one after the other); notebook 1,
66 s against 108 s. Set EDIT_TEST_WORKERS=1 EDIT_TEST_THREADS=2 to compare on another machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MANIFEST = Path(__file__).resolve().parent / "advertised_edits.json"
NOTEBOOKS = sorted(path.name for path in PROJECT_ROOT.glob("[0-9]_*.ipynb"))
REQUIRED = {"notebook": str, "name": str, "advertised": str, "inject": str}
OPTIONAL = {"replace": list, "bullet": str}
CELL_TIMEOUT_S = int(os.environ.get("EDIT_TEST_CELL_TIMEOUT", "300"))
WORKERS = int(os.environ.get("EDIT_TEST_WORKERS", "2"))
THREADS = int(os.environ.get("EDIT_TEST_THREADS", "1"))


def _load_manifest() -> list:
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


ENTRIES = _load_manifest()
# seconds per entry measured on a fresh clone (fresh-clone run 22): only the order of the pool depends on them
MEASURED_SECONDS = json.loads((Path(__file__).resolve().parent / "advertised_edits_seconds.json").read_text())


def _entry_id(entry: dict) -> str:
    return f"{Path(str(entry.get('notebook', '?'))).stem}:{entry.get('name', '?')}"


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _read(notebook: str):
    return nbformat.read(PROJECT_ROOT / notebook, as_version=4)


def _markdown(nb) -> str:
    return "\n\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")


def _parameters_cells(nb) -> list[int]:
    return [i for i, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", [])]


_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^(?:[-*]|\d+[.)])\s+(.*)$")


def what_to_try_next(nb) -> list[str] | None:
    """The top-level bullets of the notebook's "What to try next" section (each with its continuation
    lines, whitespace collapsed), or None when it has no such section."""
    lines = _markdown(nb).splitlines()
    level = None
    bullets: list[str] = []
    open_bullet, blank = False, False
    for line in lines:
        heading = _HEADING.match(line)
        if level is None:
            if heading and "what to try next" in heading[2].lower():
                level = len(heading[1])
            continue
        if heading and len(heading[1]) <= level:
            break
        bullet = _BULLET.match(line)
        if bullet:
            bullets.append(bullet[1])
            open_bullet = True
        elif not line.strip():
            blank = True
            continue
        elif open_bullet and (line[:1].isspace() or not blank) and not heading:
            bullets[-1] += " " + line.strip()        # the bullet's next line (indented, or wrapped lazily)
        else:
            open_bullet = False                      # a paragraph or sub-heading after the list
        blank = False
    return None if level is None else [_squash(b) for b in bullets]


# ---------------------------------------------------------------------------------------------
# (a)-(c): the manifest and the notebooks agree
# ---------------------------------------------------------------------------------------------


def test_the_manifest_is_well_formed():
    assert isinstance(ENTRIES, list), "tests/advertised_edits.json must hold a JSON list of entries"
    problems, seen = [], set()
    for number, entry in enumerate(ENTRIES):
        where = f"entry {number} ({_entry_id(entry) if isinstance(entry, dict) else entry!r})"
        if not isinstance(entry, dict):
            problems.append(f"{where}: not an object")
            continue
        missing = set(REQUIRED) - set(entry)
        unknown = set(entry) - set(REQUIRED) - set(OPTIONAL)
        if missing or unknown:
            problems.append(f"{where}: missing keys {sorted(missing)}, unknown keys {sorted(unknown)} "
                            f"(allowed: {sorted(REQUIRED)} and optional {sorted(OPTIONAL)})")
        for key, kind in {**REQUIRED, **OPTIONAL}.items():
            may_be_empty = key == "inject" and entry.get("replace")          # an edit made by `replace` alone
            if key in entry and (not isinstance(entry[key], kind) or (kind is str and not entry[key].strip()
                                                                      and not may_be_empty)):
                problems.append(f"{where}: {key!r} must be a non-empty {kind.__name__}"
                                + (" (or \"\" with a 'replace')" if key == "inject" else ""))
        for pair in entry.get("replace", []) if isinstance(entry.get("replace"), list) else []:
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(s, str) for s in pair) and pair[0]):
                problems.append(f"{where}: each 'replace' item must be [old, new], two strings, old not empty; "
                                f"got {pair!r}")
        key = (entry.get("notebook"), entry.get("name"))
        if key in seen:
            problems.append(f"{where}: the name {entry.get('name')!r} is used twice for {entry.get('notebook')}")
        seen.add(key)
    assert not problems, "tests/advertised_edits.json:\n" + "\n".join(problems)


def test_the_manifest_names_only_notebooks_that_exist():
    named = {entry.get("notebook") for entry in ENTRIES if isinstance(entry, dict)}
    assert named <= set(NOTEBOOKS), f"the manifest names notebooks that do not exist: {sorted(named - set(NOTEBOOKS))}"


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_every_advertised_text_is_in_the_notebook(notebook):
    markdown = _squash(_markdown(_read(notebook)))
    missing = [entry["name"] for entry in ENTRIES
               if entry.get("notebook") == notebook and _squash(entry["advertised"]) not in markdown]
    assert not missing, (f"{notebook}: the 'advertised' text of these manifest entries is not in its markdown "
                         f"(the notebook changed: update tests/advertised_edits.json): {missing}")


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_one_parameters_cell(notebook):
    cells = _parameters_cells(_read(notebook))
    assert len(cells) == 1, (f"{notebook}: {len(cells)} code cells tagged 'parameters' (cells {cells}); want exactly "
                             "one, the config cell, with metadata \"tags\": [\"parameters\"]")


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_every_bullet_of_what_to_try_next_is_an_entry(notebook):
    bullets = what_to_try_next(_read(notebook))
    assert bullets is not None, f"{notebook} has no 'What to try next' heading"
    names = [entry["bullet"] for entry in ENTRIES if entry.get("notebook") == notebook and "bullet" in entry]
    problems = []
    for name in names:
        hits = [b for b in bullets if b.startswith(_squash(name))]
        if len(hits) != 1:
            problems.append(f"the manifest's bullet {name!r} names {len(hits)} bullets (want exactly 1)")
    for bullet in bullets:
        if not any(bullet.startswith(_squash(name)) for name in names):
            problems.append(f"no manifest entry names the bullet {bullet[:80]!r}...: add one with "
                            f"\"bullet\": \"<its first words>\"")
    assert not problems, f"{notebook}, 'What to try next':\n" + "\n".join(problems)


def test_the_bullet_rule_reads_wrapped_bullets_and_stops_at_the_next_heading():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("## 9. What to try next\n\n- Set `CLIP_X0 = False`\n  and re-run (1 min).\n"
                                      "* Use the laptop preset:\n`PRESET = \"laptop\"`\n\nA paragraph.\n\n"
                                      "### A sub-heading\n1. numbered"),
        nbformat.v4.new_markdown_cell("- a later cell\n\n## Next section\n- not in the section")])
    assert what_to_try_next(nb) == ["Set `CLIP_X0 = False` and re-run (1 min).",
                                    "Use the laptop preset: `PRESET = \"laptop\"`", "numbered", "a later cell"]
    assert what_to_try_next(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title")])) is None


# ---------------------------------------------------------------------------------------------
# (d): each edit, executed
# ---------------------------------------------------------------------------------------------


class ManifestDrift(AssertionError):
    """An entry's `replace` text no longer occurs exactly once in the notebook's code."""


def edited_notebook(entry: dict):
    """The entry's notebook with its edit applied, in memory (the file is not touched)."""
    nb = _read(entry["notebook"])
    where = _parameters_cells(nb)
    if len(where) != 1:
        raise ManifestDrift(f"{entry['notebook']} has {len(where)} cells tagged 'parameters' (want 1)")
    for old, new in entry.get("replace", []):
        hits = [cell for cell in nb.cells if cell.cell_type == "code" and old in cell.source]
        count = sum(cell.source.count(old) for cell in hits)
        if count != 1:
            raise ManifestDrift(f"manifest entry {_entry_id(entry)!r}: its replace text occurs {count} times in "
                                f"the code cells of {entry['notebook']} (want exactly 1): the manifest drifted from the "
                                f"notebook; update tests/advertised_edits.json. Text: {old!r}")
        hits[0].source = hits[0].source.replace(old, new)
    injected = nbformat.v4.new_code_cell(entry["inject"], metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(where[0] + 1, injected)
    return nb


@dataclass
class EditRun:
    ok: bool
    seconds: float
    message: str = ""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _kernel_env(threads: int) -> dict:
    env = {**os.environ, "DDPM_QUICK": "1", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    return env


async def _run_one(nb, threads: int, timeout: int) -> EditRun:
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(PROJECT_ROOT)}})
    start = time.perf_counter()
    try:
        await client.async_execute(env=_kernel_env(threads), cwd=str(PROJECT_ROOT))
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as error:
        return EditRun(False, time.perf_counter() - start, _ANSI.sub("", str(error)))
    return EditRun(True, time.perf_counter() - start)


def run_edits(entries: list[dict], workers: int = WORKERS, threads: int = THREADS,
              timeout: int = CELL_TIMEOUT_S) -> dict[str, EditRun]:
    """Execute each entry's edited notebook, `workers` kernels at a time with `threads` threads each."""
    async def run_all():
        gate = asyncio.Semaphore(workers)

        async def one(entry):
            try:
                nb = edited_notebook(entry)
            except ManifestDrift as drift:
                return _entry_id(entry), EditRun(False, 0.0, str(drift))
            async with gate:
                return _entry_id(entry), await _run_one(nb, threads, timeout)
        return dict(await asyncio.gather(*(one(entry) for entry in entries)))
    return asyncio.run(run_all())


@pytest.fixture(scope="session")
def edit_runs(request):
    """The results of every selected entry, run once for the session through the pool, the longest
    first by the seconds the last run took (pytest's cache; on a fresh clone, as in CI, the committed
    tests/advertised_edits_seconds.json), so that the two kernels end together."""
    selected = [item.callspec.params["entry"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_advertised_edit"   # nbval cells have none
                and hasattr(item, "callspec")]
    cache = getattr(request.config, "cache", None)   # None under -p no:cacheprovider
    last = {**MEASURED_SECONDS, **(cache.get("advertised_edits/seconds", {}) if cache else {})}
    selected.sort(key=lambda entry: -last.get(_entry_id(entry), 60.0))
    start = time.perf_counter()
    runs = run_edits(selected)
    print(f"\n{len(selected)} advertised edits run in {time.perf_counter() - start:.0f} s "
          f"({WORKERS} kernels x {THREADS} thread(s))")
    if cache:
        cache.set("advertised_edits/seconds",
                  {**last, **{name: round(run.seconds, 1) for name, run in runs.items() if run.ok}})
    return runs


@pytest.mark.parametrize("entry", ENTRIES, ids=[_entry_id(e) if isinstance(e, dict) else "?" for e in ENTRIES])
def test_advertised_edit(entry, edit_runs):
    run = edit_runs[_entry_id(entry)]
    assert run.ok, (f"the advertised edit {_entry_id(entry)!r} fails in quick mode (inject {entry['inject']!r}, "
                    f"replace {entry.get('replace', [])!r}) after {run.seconds:.0f} s:\n{run.message}")


def test_an_edit_that_breaks_a_cell_reports_that_cell(tmp_path, monkeypatch):
    """The runner itself: an injected error fails naming the cell's source and the traceback; a
    replace text that is not in the notebook is reported as drift; the notebook file is untouched."""
    notebook = tmp_path / "9_tiny.ipynb"
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("SCALE = 2", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import os\nassert os.getcwd() == PROJECT, os.getcwd()\n"
                                  "assert os.environ['DDPM_QUICK'] == '1'\nvalue = 10 // SCALE\nprint(value)")])
    nbformat.write(nb, notebook)
    before = notebook.read_bytes()
    monkeypatch.setattr(f"{__name__}.PROJECT_ROOT", tmp_path)
    ok = {"notebook": notebook.name, "name": "fine", "advertised": "", "inject": f"PROJECT = {str(tmp_path)!r}"}
    broken = {**ok, "name": "zero", "inject": ok["inject"] + "\nSCALE = 0"}
    drifted = {**ok, "name": "drift", "replace": [["value = 10 // SCALE", "value = 1"], ["not there", "x"]]}
    runs = run_edits([ok, broken, drifted], workers=2, threads=1, timeout=60)
    assert runs["9_tiny:fine"].ok, runs["9_tiny:fine"].message
    failed = runs["9_tiny:zero"]
    assert not failed.ok and "value = 10 // SCALE" in failed.message and "ZeroDivisionError" in failed.message
    assert not runs["9_tiny:drift"].ok and "the manifest drifted" in runs["9_tiny:drift"].message
    assert notebook.read_bytes() == before
