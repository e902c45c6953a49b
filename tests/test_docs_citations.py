"""The package cites only documents that ship in the repo, and every docs/math.md section it cites exists."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE = re.compile(r"\.\./shared|\bMATH\.md|\bREFERENCE\.md|\bDESIGN\.md")
CITED = re.compile(r"docs/math\.md sec\. (\d+(?:\.\d+)?)")


def _sources() -> list[Path]:
    return sorted((ROOT / "msdfast").rglob("*.py")) + [ROOT / "README.md"]


def test_no_citation_of_files_outside_the_repo() -> None:
    bad = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in _sources()
           for i, line in enumerate(p.read_text().splitlines(), 1) if OUTSIDE.search(line)]
    assert not bad, "cite docs/math.md (or the public source) instead:\n" + "\n".join(bad)


def test_cited_sections_of_docs_math_exist() -> None:
    headings = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)[ .]", (ROOT / "docs" / "math.md").read_text(), re.M))
    cited = {(str(p.relative_to(ROOT)), m) for p in _sources() for m in CITED.findall(p.read_text())}
    assert cited, "expected docstrings citing docs/math.md"
    missing = sorted(f"{f}: sec. {s}" for f, s in cited if s not in headings)
    assert not missing, "cited sections missing from docs/math.md:\n" + "\n".join(missing)
