"""The tracked files themselves: nothing a merge left behind."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A line that is exactly a merge marker: 7 of <, = or > (with a label after < and >).
MARKER = re.compile(r"^(<{7} .*|={7}|>{7} .*)$", re.MULTILINE)


def text_files() -> list[Path]:
    """The repository's own text: the README, Makefile, pyproject and every text file under
    src/, tests/, benchmarks/ (caches and build outputs are not there)."""
    suffixes = {".py", ".md", ".toml", ".cfg", ".txt", ".yml", ".yaml", ".json", ".ini"}
    top = [ROOT / n for n in ("README.md", "Makefile", "pyproject.toml") if (ROOT / n).is_file()]
    below = [
        p
        for d in ("src", "tests", "benchmarks", ".ci")
        for p in (ROOT / d).rglob("*")
        if p.is_file() and (p.suffix in suffixes or d == ".ci") and "__pycache__" not in p.parts
    ]
    return top + below


def test_no_merge_conflict_markers_in_tracked_files():
    found = []
    for path in text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in MARKER.finditer(text):
            found.append(f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}")
    assert not found, "merge conflict markers left in: " + ", ".join(found)
