"""notebook_support.report: a notebook's results cell shows the very table README.md or RESULTS.md
carries, loads the generator from the project root whatever the working folder, and names the
registered tables when asked for another; links into the lab report point at headings it has."""

from __future__ import annotations

import json
import re
import sys
import unicodedata

import pytest

from notebook_support import report
from notebook_support.environment import PROJECT_ROOT


def _region(filename: str, name: str) -> str:
    tables = report.readme_tables()
    text = (PROJECT_ROOT / filename).read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    start, end = next((s, e) for region, s, e in tables.readme_regions(text) if region == name)
    return "".join(lines[start + 1:end]).strip("\n")


@pytest.mark.parametrize("filename, name", [("README.md", "notebooks"), ("README.md", "quality-n2000"),
                                            ("RESULTS.md", "bake-off")])
def test_show_table_displays_the_table_the_files_carry(filename, name, monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    assert report.show_table(name) is None
    (markdown,) = shown
    assert type(markdown).__name__ == "Markdown"
    tables = report.readme_tables()                      # what the generator writes there (test_results checks
    assert markdown.data == tables.render_region(name, _region(filename, name))   # that the file holds it)
    assert markdown.data.startswith("| ")


def test_an_unknown_table_names_the_registered_ones():
    with pytest.raises(KeyError) as caught:
        report.table_markdown("quality-n200")
    message = str(caught.value)
    assert message.startswith("no table 'quality-n200' is registered in scripts/readme_tables.py")
    assert all(name in message for name in report.table_names()) and "quality-n2000" in message


def test_the_generator_loads_from_any_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, report._MODULE_NAME, raising=False)
    tables = report.readme_tables()
    assert tables.README == PROJECT_ROOT / "README.md" and "garbage" in tables.README_TABLES
    assert report.readme_tables() is tables                           # loaded once
    assert report.table_markdown("garbage").startswith("| images |")


def _slug(heading: str, seen: dict[str, int]) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped (letters, marks,
    digits, '_', '-' and spaces kept), spaces to '-', '-1', '-2', ... on repeats."""
    kept = "".join(ch for ch in heading.strip().lower()
                   if ch in " -_" or unicodedata.category(ch)[0] in "LMN")
    slug = kept.replace(" ", "-")
    count = seen.get(slug, 0)
    seen[slug] = count + 1
    return slug if count == 0 else f"{slug}-{count}"


def _anchors(filename: str) -> set[str]:
    seen: dict[str, int] = {}
    text = re.sub(r"```.*?```", "", (PROJECT_ROOT / filename).read_text(encoding="utf-8"), flags=re.DOTALL)
    return {_slug(m[1], seen) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)}


def _markdown_sources() -> dict[str, str]:
    sources = {name: (PROJECT_ROOT / name).read_text(encoding="utf-8") for name in ("README.md", "RESULTS.md")}
    for path in sorted(PROJECT_ROOT.glob("[0-9]_*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        sources[path.name] = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return sources


def test_slugs_follow_github():
    seen: dict[str, int] = {}
    assert _slug("Notebook 3 · A time-conditioned U-Net", seen) == "notebook-3--a-time-conditioned-u-net"
    assert _slug("x̂₀ clipping, chosen per model by measurement", seen) == "x̂₀-clipping-chosen-per-model-by-measurement"
    assert _slug("Results", seen) == "results" and _slug("Results", seen) == "results-1"


def test_links_to_the_lab_report_and_the_readme_point_at_headings():
    """Every `RESULTS.md#anchor` and `README.md#anchor` link in README.md, RESULTS.md and the
    notebooks' markdown names a heading of that file (so a moved or renamed section is caught)."""
    anchors = {name: _anchors(name) for name in ("README.md", "RESULTS.md")}
    broken = []
    for source, text in _markdown_sources().items():
        for target, anchor in re.findall(r"\]\((README\.md|RESULTS\.md)#([^)\s]+)\)", text):
            if anchor not in anchors[target]:
                broken.append(f"{source}: {target}#{anchor}")
        own = re.findall(r"\]\(#([^)\s]+)\)", text) if source in anchors else []
        broken += [f"{source}: #{anchor}" for anchor in own if anchor not in anchors[source]]
    assert not broken, f"links to headings that do not exist: {broken}"
