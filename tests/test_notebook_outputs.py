"""The committed notebooks read well where readers meet them first (GitHub, nbviewer).

nbval checks that every cell runs; these tests check what was committed: each notebook was
executed top to bottom in one kernel (`python scripts/run_notebooks.py`), and its outputs are ones
a reader can read: no errors, no widget bars frozen at 0 %, no stderr boxes a reader would take
for errors, no output longer than a screen, nothing that names this machine (paths, addresses).
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(ROOT.glob("[0-9]_*.ipynb"))
MAX_OUTPUT_LINES = 50
MACHINE_SPECIFIC = re.compile(r"(/work/|/home/|/root/|/tmp/|/Users/|[A-Z]:\\\\|0x[0-9a-fA-F]{8,})")


def _code_cells(notebook: Path) -> list[dict]:
    return [c for c in json.loads(notebook.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _shown_text(output: dict) -> str:
    """What a static viewer shows of an output: stream text with carriage-return redraws resolved."""
    if output["output_type"] == "stream":
        return "\n".join(line.split("\r")[-1] for line in _text(output["text"]).split("\n"))
    return _text(output.get("data", {}).get("text/plain", ""))


def test_the_series_is_found():
    assert [n.name for n in NOTEBOOKS][:5] == ["1_indepth_inspect.ipynb", "2_custom_mlp.ipynb", "3_unet.ipynb",
                                              "4_guidance.ipynb", "5_what_to_predict.ipynb"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_executed_top_to_bottom_without_errors(notebook):
    cells = _code_cells(notebook)
    counts = [c["execution_count"] for c in cells]
    assert counts == list(range(1, len(cells) + 1)), f"{notebook.name}: execution counts {counts}, expected 1..{len(cells)}"
    errors = [i for i, c in enumerate(cells, 1) if any(o["output_type"] == "error" for o in c["outputs"])]
    assert not errors, f"{notebook.name}: error outputs in code cells {errors}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_read_well_on_a_static_page(notebook):
    problems = []
    for number, cell in enumerate(_code_cells(notebook), 1):
        for output in cell["outputs"]:
            if "application/vnd.jupyter.widget-view+json" in output.get("data", {}):
                problems.append(f"code cell {number}: a widget output (a static page shows it frozen)")
            if output["output_type"] == "stream" and output["name"] == "stderr":
                problems.append(f"code cell {number}: stderr output {_text(output['text'])[:80]!r}")
            shown = _shown_text(output)
            if shown.count("\n") + 1 > MAX_OUTPUT_LINES:
                problems.append(f"code cell {number}: {shown.count(chr(10)) + 1} lines of output (> {MAX_OUTPUT_LINES})")
            if MACHINE_SPECIFIC.search(shown):
                problems.append(f"code cell {number}: a path or address of this machine: "
                                f"{MACHINE_SPECIFIC.search(shown).group(0)!r}")
    assert not problems, f"{notebook.name}:\n" + "\n".join(problems)
    assert "widgets" not in json.loads(notebook.read_text(encoding="utf-8"))["metadata"]
