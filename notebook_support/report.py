"""A notebook's results cell: the very table README.md or RESULTS.md (the lab report) carries.

    from notebook_support.report import show_table
    show_table("quality-n2000")

The tables are registered in scripts/readme_tables.py (`@readme_table("name", ...)`) and rendered
from the result files in benchmarks/results/ by the same function that writes them into README.md
and RESULTS.md, so a notebook, the README and the lab report cannot disagree. A table whose files do
not exist yet renders as one line naming the command that makes them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from notebook_support.environment import PROJECT_ROOT

_SCRIPT = PROJECT_ROOT / "scripts" / "readme_tables.py"
_MODULE_NAME = "notebook_support._readme_tables"


class UnknownTableError(KeyError):
    """No table of that name is registered in scripts/readme_tables.py."""

    def __str__(self) -> str:          # KeyError would print the message in quotes
        return str(self.args[0])


def readme_tables() -> ModuleType:
    """scripts/readme_tables.py as a module, loaded once from the project root (whatever the working
    folder: a notebook's kernel may start anywhere)."""
    module = sys.modules.get(_MODULE_NAME)
    if module is None:
        spec = importlib.util.spec_from_file_location(_MODULE_NAME, _SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[_MODULE_NAME] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[_MODULE_NAME]
            raise
    return module


def table_names() -> list[str]:
    """The names of the registered tables, sorted."""
    return sorted(readme_tables().README_TABLES)


def _current_region(tables: ModuleType, name: str) -> str:
    """The text between `name`'s markers in README.md or RESULTS.md ('' when neither has them):
    some renderers keep hand-written cells of the current table (the notebooks table's prose)."""
    for path in tables.GENERATED_FILES:
        if not Path(path).exists():
            continue
        lines = Path(path).read_text(encoding="utf-8").splitlines(keepends=True)
        for region, start, end in tables.readme_regions("".join(lines)):
            if region == name:
                return "".join(lines[start + 1:end])
    return ""


def table_markdown(name: str) -> str:
    """The markdown of the registered table `name`, rendered from the result files as they are now.
    Raises UnknownTableError (a KeyError) naming the registered tables when there is none called `name`."""
    tables = readme_tables()
    if name not in tables.README_TABLES:
        raise UnknownTableError(f"no table {name!r} is registered in scripts/readme_tables.py; registered: "
                       f"{', '.join(sorted(tables.README_TABLES))}")
    return tables.render_region(name, _current_region(tables, name))


def show_table(name: str) -> None:
    """Display the registered table `name` in the notebook (as rendered markdown; as plain text
    outside IPython)."""
    from IPython.display import Markdown, display

    display(Markdown(table_markdown(name)))
