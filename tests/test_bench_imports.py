"""Every benchmark script imports: the names it takes from the project and from its sibling scripts
exist (a renamed helper broke a reference script once without any test noticing)."""

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_bench_script_imports(script, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{script[:-3]}", BENCH / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # runs the imports and definitions, not main()
    if '__name__ == "__main__"' in (BENCH / script).read_text():  # a script, not a shared helper (report.py)
        assert callable(getattr(module, "main", None)), f"{script} has no main()"
