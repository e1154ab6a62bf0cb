"""The printed report of a benchmark: every line is printed as it comes and kept, so the same text
lands in bench/results/ when the run ends."""

from __future__ import annotations

from pathlib import Path


class Report:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def say(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(self.lines) + "\n")
