"""The docs stand alone (docs/design.md is the entry point): nothing in the repository points to a design
document outside it, and every pointer into docs/ names a page, anchor or section that exists.

Pointers checked:
- Markdown links in docs/ and README.md, `[text](page.md#anchor)`, relative to the file that holds them;
  anchors are GitHub's heading slugs;
- page paths written out in docs, README and code, `docs/<page>.md`, relative to the repository root,
  with an optional `#anchor`;
- section pointers after such a path: a quoted title, `docs/<page>.md, "Title"` (a heading or a bold
  lead-in of that page must contain it), or a number, `docs/<page>.md §8` (a numbered heading).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
# Spelled in two parts so that this file does not mention it.
OUTSIDE_DESIGN_DOC = "DESIGN" + ".md"
SKIP_DIRS = frozenset(
    {
        ".git",
        ".venv",
        "venv",
        "build",
        "dist",
        "__pycache__",
        ".pytest_cache",
        ".hypothesis",
        ".mypy_cache",
        ".ruff_cache",
        "fedlora-out",
        ".fedlora-cache",
        "node_modules",
    }
)
TEXT_SUFFIXES = frozenset(
    {".py", ".md", ".sh", ".toml", ".txt", ".cfg", ".ini", ".json", ".yml", ".yaml", ""}
)
POINTER_SUFFIXES = frozenset({".py", ".md", ".sh", ".toml"})

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_BOLD = re.compile(r"\*\*(.+?)\*\*", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")  # `2**1100` is not bold
_MD_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
_PAGE_PATH = re.compile(r"(?<![\w/.-])docs/([\w.-]+\.md)(#[\w-]+)?")
_QUOTED_SECTION = re.compile(r"(?<![\w/.-])docs/([\w.-]+\.md),?\s*\(?\"([^\"]{1,80})\"")
_NUMBERED_SECTION = re.compile(r"(?<![\w/.-])docs/([\w.-]+\.md),?\s*§(\d+(?:\.\d+)*)")


def _repo_files(suffixes: frozenset[str]) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.suffix in suffixes:
                yield path


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def _prose_lines(text: str) -> Iterator[str]:
    """The lines of a Markdown text outside fenced code blocks."""
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            yield line


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@cache
def _headings(page: Path) -> tuple[str, ...]:
    headings = []
    for line in _prose_lines(page.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if match:
            headings.append(match.group(2))
    return tuple(headings)


@cache
def _anchors(page: Path) -> frozenset[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for heading in _headings(page):
        slug = github_slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return frozenset(anchors)


def _normalised(text: str) -> str:
    return " ".join(text.replace("`", "").split()).lower()


@cache
def _section_titles(page: Path) -> tuple[str, ...]:
    """Headings and bold lead-ins (`**Cloud restart.**`) of a page, normalised."""
    prose = "\n".join(_prose_lines(page.read_text(encoding="utf-8")))
    bold = [match.group(1) for match in _BOLD.finditer(_INLINE_CODE.sub("", prose))]
    return tuple(_normalised(title) for title in (*_headings(page), *bold))


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _where(path: Path, text: str, match: re.Match[str]) -> str:
    return f"{path.relative_to(ROOT)}:{_line_of(text, match.start())} -> {match.group(0)!r}"


def test_no_file_points_to_a_design_document_outside_the_repository() -> None:
    offenders = []
    for path in _repo_files(TEXT_SUFFIXES):
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in re.finditer(re.escape(OUTSIDE_DESIGN_DOC), text):
            offenders.append(f"{path.relative_to(ROOT)}:{_line_of(text, match.start())}")
    assert offenders == [], f"point into docs/ instead (docs/design.md is the entry point): {offenders}"


def test_markdown_links_in_docs_and_readme_resolve() -> None:
    broken = []
    for page in _markdown_files():
        text = "\n".join(_prose_lines(page.read_text(encoding="utf-8")))
        for match in _MD_LINK.finditer(text):
            target = match.group(1)
            if re.match(r"[a-z][a-z0-9+.-]*:", target):
                continue  # http(s):, mailto: ...
            path_part, _, anchor = target.partition("#")
            resolved = (page.parent / path_part).resolve() if path_part else page
            where = f"{page.relative_to(ROOT)}:{_line_of(text, match.start())} -> {target}"
            if not resolved.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{where} (no such heading)")
    assert broken == [], broken


def test_page_paths_in_docs_readme_and_code_exist() -> None:
    broken = []
    for path in _repo_files(POINTER_SUFFIXES):
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in _PAGE_PATH.finditer(text):
            page = DOCS / match.group(1)
            anchor = (match.group(2) or "").lstrip("#")
            where = f"{path.relative_to(ROOT)}:{_line_of(text, match.start())} -> {match.group(0)}"
            if not page.is_file():
                broken.append(f"{where} (no such page)")
            elif anchor and anchor not in _anchors(page):
                broken.append(f"{where} (no such heading)")
    assert broken == [], broken


def test_section_pointers_name_existing_sections() -> None:
    broken = []
    for path in _repo_files(POINTER_SUFFIXES):
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in _QUOTED_SECTION.finditer(text):
            page = DOCS / match.group(1)
            title = _normalised(match.group(2))
            if page.is_file() and not any(title in known for known in _section_titles(page)):
                broken.append(_where(path, text, match))
        for match in _NUMBERED_SECTION.finditer(text):
            page = DOCS / match.group(1)
            numbered = re.compile(re.escape(match.group(2)) + r"[.\s]")
            if page.is_file() and not any(numbered.match(heading) for heading in _headings(page)):
                broken.append(_where(path, text, match))
    assert broken == [], broken


def test_readme_sends_engineers_to_the_design_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/design.md)" in readme
    design = (DOCS / "design.md").read_text(encoding="utf-8")
    linked = {match.group(1).partition("#")[0] for match in _MD_LINK.finditer(design)}
    unlinked = sorted(p.name for p in DOCS.glob("*.md") if p.name != "design.md" and p.name not in linked)
    assert unlinked == [], f"docs/design.md should link every page of docs/: {unlinked}"


def test_github_slug_follows_githubs_rules() -> None:
    assert github_slug("7. Reported ε is an upper bound") == "7-reported-ε-is-an-upper-bound"
    assert github_slug("Topics (`fl_protocol/topics.py`)") == "topics-fl_protocoltopicspy"
    assert github_slug("Weights (fairness / adaptive)") == "weights-fairness--adaptive"
