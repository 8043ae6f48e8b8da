"""docs/errors.md: every row names a test that exists, and the matrix covers at least 40 inputs and faults."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ERRORS_DOC = ROOT / "docs" / "errors.md"
# `tests/<file>.py::<test>` references, with the file named once per cell and later tests of the same cell bare.
REFERENCE = re.compile(r"`(test_\w+\.py)::(test_\w+)(?:\[[^\]]*\])?`|`(test_\w+)(?:\[[^\]]*\])?`")


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_every_row_of_the_error_matrix_names_an_existing_test() -> None:
    rows = [line for line in ERRORS_DOC.read_text().splitlines() if line.startswith("| ") and "---" not in line]
    rows = [row for row in rows if not row.startswith("| input or fault")]
    assert len(rows) >= 40, f"docs/errors.md has {len(rows)} rows; the matrix promises at least 40"
    for row in rows:
        test_cell = row.rstrip(" |").rsplit("|", 1)[-1]
        if test_cell.strip() == "—":
            continue  # a fault no test can provoke (stated as such in the row)
        current_file = None
        names = []
        for match in REFERENCE.finditer(test_cell):
            if match.group(1):
                current_file, name = match.group(1), match.group(2)
            else:
                name = match.group(3)
            assert current_file is not None, f"a test without its file in: {row}"
            names.append((current_file, name))
        assert names, f"no test named in: {row}"
        for file_name, name in names:
            path = ROOT / "tests" / file_name
            assert path.exists(), f"{file_name} (named in docs/errors.md) does not exist"
            assert name in _test_names(path), f"{file_name}::{name} (named in docs/errors.md) does not exist"
