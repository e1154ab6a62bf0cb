"""No undefined name anywhere in the project's Python (pyflakes): a merge once left a benchmark
calling a variable of another function, which only failed when the benchmark ran."""

from pathlib import Path

from pyflakes.api import checkPath
from pyflakes.messages import UndefinedExport, UndefinedLocal, UndefinedName
from pyflakes.reporter import Reporter

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("assets", "pipeline", "neggen_model", "bench", "tests", "scripts")


class _Collect(Reporter):
    def __init__(self) -> None:
        self.found: list[str] = []

    def flake(self, message) -> None:
        if isinstance(message, (UndefinedName, UndefinedLocal, UndefinedExport)):
            self.found.append(str(message))

    def syntaxError(self, filename, msg, lineno, offset, text) -> None:
        self.found.append(f"{filename}:{lineno}: {msg}")

    def unexpectedError(self, filename, msg) -> None:
        self.found.append(f"{filename}: {msg}")


def test_no_undefined_names():
    reporter = _Collect()
    files = sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))
    assert len(files) > 100
    for path in files:
        checkPath(str(path), reporter)
    assert reporter.found == []
