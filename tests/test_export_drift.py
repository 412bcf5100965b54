"""Edits propagate or say so: importing `lessons.<module>` while its notebook's `#| export` cells
say something else prints ONE line naming the notebook and `python -m notebook_support.export`
(notebook_support.export.install_drift_check, called by lessons/__init__.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from notebook_support import export
from notebook_support.environment import PROJECT_ROOT

COMMAND = "run `python -m notebook_support.export` to bring the notebook's code here"


def _edit_first_export_cell(notebook: Path, line: str = "EDITED_IN_THE_NOTEBOOK = 1") -> None:
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code"
                and "".join(c["source"]).lstrip().startswith(export.EXPORT_TAG))
    cell["source"] = "".join(cell["source"]) + "\n" + line + "\n"
    notebook.write_text(json.dumps(nb), encoding="utf-8")


@pytest.fixture
def project(tmp_path):
    """A copy of what `import lessons.mlp` needs, with notebook 2 and lessons/mlp.py in step."""
    for folder in ("lessons", "notebook_support"):
        shutil.copytree(PROJECT_ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "diffusion_utils.py", tmp_path)
    shutil.copy(PROJECT_ROOT / "2_custom_mlp.ipynb", tmp_path)
    (tmp_path / "lessons" / "mlp.py").write_text(export.render(tmp_path / "2_custom_mlp.ipynb"), encoding="utf-8")
    return tmp_path


def test_drift_line_names_the_notebook_and_the_command(project):
    assert export.drift_line("mlp", project) is None                       # in step
    assert export.drift_line("unet", project) is None                      # its notebook is not there: nothing to say
    assert export.drift_line("not_a_module", project) is None
    _edit_first_export_cell(project / "2_custom_mlp.ipynb")
    line = export.drift_line("mlp", project)
    assert line == ("warning: lessons/mlp.py differs from the `#| export` cells of 2_custom_mlp.ipynb (edited since the "
                    f"last export): this import uses lessons/mlp.py as it is; {COMMAND}")
    (project / "2_custom_mlp.ipynb").write_text("{\"cells\": [", encoding="utf-8")   # a save cut short
    line = export.drift_line("mlp", project)
    assert "\n" not in line and line.startswith("warning: lessons/mlp.py cannot be compared with 2_custom_mlp.ipynb "
                                                "(ExportError: ") and line.endswith(COMMAND)


def _import(project: Path, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(project), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True,
                          timeout=120)


def test_an_import_of_a_stale_module_warns_in_one_line(project):
    quiet = _import(project, "import lessons.mlp")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr            # in step: not a word
    _edit_first_export_cell(project / "2_custom_mlp.ipynb")
    stale = _import(project, "import lessons.mlp\nimport lessons.mlp\nimport lessons\nprint(lessons.mlp.train.__name__)")
    assert stale.returncode == 0 and stale.stdout == "train\n"                 # the import itself works
    assert stale.stderr.splitlines() == [export.drift_line("mlp", project)]    # once, one line
    assert "2_custom_mlp.ipynb" in stale.stderr and "python -m notebook_support.export" in stale.stderr
    assert "EDITED_IN_THE_NOTEBOOK" not in _import(project, "import lessons.mlp; print(dir(lessons.mlp))").stdout


def test_the_committed_modules_are_checked_on_import():
    """In this project, lessons/__init__.py installs the check once, however often it is imported."""
    import lessons  # noqa: F401

    installed = [f for f in sys.meta_path if type(f).__name__ == "DriftCheck" and f.package == "lessons"]
    assert len(installed) == 1 and installed[0].root == PROJECT_ROOT
    export.install_drift_check("lessons")
    assert len([f for f in sys.meta_path if type(f).__name__ == "DriftCheck" and f.package == "lessons"]) == 1
