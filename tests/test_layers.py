"""The house's layers, read from the source (ast; nothing is imported): imports run one way,
assets → pipeline → neggen_model. The stage library (`pipeline/`) and the learning library
(`neggen_model/`) import no Dagster and not the orchestration layer (`assets/`); the learning
library imports no stage library; and no two top-level folders import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The top-level folders that hold Python (the design card's, and bench/): every one is checked.
FOLDERS = sorted(p.name for p in REPO.iterdir() if p.is_dir() and not p.name.startswith(".") and any(p.rglob("*.py")))
ORCHESTRATION = ("dagster", "assets")  # "dagster" also stands for dagster_webserver, dagster_pipes, ...
FORBIDDEN = {
    "pipeline": ORCHESTRATION,
    "neggen_model": (*ORCHESTRATION, "pipeline"),
}


def _modules(folder: str) -> list[Path]:
    return sorted(p for p in (REPO / folder).rglob("*.py") if ".venv" not in p.parts)


def imported_tops(path: Path) -> dict[str, int]:
    """The top-level names `path` imports (at module level or inside functions) -> first line.
    A relative import stays inside the file's own folder, so it names none."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            found.setdefault(name.split(".")[0], node.lineno)
    return found


def _is(name: str, forbidden: str) -> bool:
    return name == forbidden or (forbidden == "dagster" and name.startswith("dagster_"))


def test_every_layer_folder_is_found():
    assert {"assets", "pipeline", "neggen_model", "tests"} <= set(FOLDERS)


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_libraries_import_no_orchestration(folder):
    offences = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in _modules(folder)
        for name, line in imported_tops(path).items()
        if any(_is(name, forbidden) for forbidden in FORBIDDEN[folder])
    ]
    assert not offences, f"{folder}/ must not import {', '.join(FORBIDDEN[folder])}:\n" + "\n".join(offences)


def test_no_two_folders_import_each_other():
    edges: dict[tuple[str, str], str] = {}  # (importer, imported) -> first place
    for folder in FOLDERS:
        for path in _modules(folder):
            for name, line in imported_tops(path).items():
                if name in FOLDERS and name != folder:
                    edges.setdefault((folder, name), f"{path.relative_to(REPO)}:{line}")
    both_ways = [
        f"{a} ↔ {b}: {edges[(a, b)]} and {edges[(b, a)]}" for a, b in edges if a < b and (b, a) in edges
    ]
    assert not both_ways, "folders that import each other:\n" + "\n".join(both_ways)


def test_the_checker_sees_every_kind_of_import(tmp_path):
    """The rules above hold only if the parser finds imports wherever they are written."""
    source = tmp_path / "module.py"
    source.write_text(
        "import dagster as dg\nimport os.path\nfrom assets.resources import X\nfrom . import sibling\n"
        "def late():\n    from pipeline.storage import DatasetStore\n    import dagster_webserver\n"
    )
    assert set(imported_tops(source)) == {"dagster", "os", "assets", "pipeline", "dagster_webserver"}
    assert _is("dagster_webserver", "dagster") and not _is("dagsterish", "dagster")
