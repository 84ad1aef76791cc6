"""The docs' fenced blocks, markers, anchors and links: what tests/unit/test_docs.py checks and
tests/integration/test_docs_commands.py runs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_BYTES = 10_240
MARKERS = ("test", "ci", "manual")
# Fence languages that hold commands: they must be `sh` with a marker, so nothing slips past the rule.
SHELL_LANGUAGES = {"sh", "bash", "shell", "console", "zsh", "shell-session"}

# Docs written in parallel by someone else and not converted to the markers yet: their blocks are not
# checked here (their links are, and the README must link them). Remove an entry once its blocks are
# ```sh test / ci / manual and its samples ```text.
NOT_YET_MARKED: dict[str, str] = {}

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)(?P<info>.*)$")
_LINK = re.compile(r"(?<!\\)!?\[(?:[^\]\\]|\\.)*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a doc: where it is, its info string and its text (dedented)."""

    path: Path
    line: int  # 1-based line of the opening fence
    info: str
    text: str

    @property
    def language(self) -> str:
        return self.info.split()[0] if self.info.split() else ""

    @property
    def marker(self) -> str | None:
        words = self.info.split()[1:]
        return words[0] if words else None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def first_line(self) -> str:
        lines = self.text.splitlines()
        return lines[0].strip() if lines else ""


def doc_files() -> list[Path]:
    """README.md and every docs/*.md (docs/serving.md included when it exists)."""
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, indented ones (in list items) included."""
    out: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = len(m["indent"]), m["fence"], m["info"].strip()
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            close = _FENCE.match(lines[j])
            if (
                close
                and close["fence"].startswith(fence[0])
                and len(close["fence"]) >= len(fence)
                and not close["info"].strip()
            ):
                break
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        out.append(Block(path, i + 1, info, "\n".join(body) + "\n"))
        i = j + 1
    return out


def all_blocks() -> list[Block]:
    """The blocks of every doc whose blocks are checked (all but :data:`NOT_YET_MARKED`)."""
    return [b for p in doc_files() if str(p.relative_to(ROOT)) not in NOT_YET_MARKED for b in blocks(p)]


def sh_blocks(marker: str | None = None) -> list[Block]:
    return [b for b in all_blocks() if b.language == "sh" and (marker is None or b.marker == marker)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but `-` and `_` dropped, spaces to `-`."""
    text = re.sub(r"<[^>]+>", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a Markdown file (outside code blocks), with GitHub's -1, -2 suffixes."""
    fenced = {n for b in blocks(path) for n in range(b.line, b.line + b.text.count("\n") + 2)}
    seen: dict[str, int] = {}
    out: set[str] = set()
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        m = re.match(r"^#{1,6} (.*?)#*\s*$", line)
        if not m or n in fenced:
            continue
        base = slug(m[1])
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def links(path: Path) -> list[tuple[int, str]]:
    """Relative link targets in a Markdown file (outside code blocks and inline code), with line numbers."""
    fenced = {n for b in blocks(path) for n in range(b.line, b.line + b.text.count("\n") + 2)}
    out: list[tuple[int, str]] = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if n in fenced:
            continue
        prose = re.sub(r"`[^`]*`", "``", line)
        for m in _LINK.finditer(prose):
            target = m["target"]
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            out.append((n, target))
    return out


def ci_make_targets() -> set[str]:
    """The make targets `.ci/run` reaches: the ones it runs and, recursively, their prerequisites."""
    run = (ROOT / ".ci" / "run").read_text()
    todo = re.findall(r"^\s*(?:[A-Z_]+=\S+\s+)*make\s+([a-z0-9-]+)", run, re.M)
    makefile = (ROOT / "Makefile").read_text()
    prereqs: dict[str, list[str]] = {}
    for m in re.finditer(r"^([a-z0-9-]+):(?!=)([^#\n]*)", makefile, re.M):
        prereqs[m[1]] = [w for w in m[2].split() if re.fullmatch(r"[a-z0-9-]+", w)]
    out: set[str] = set()
    while todo:
        t = todo.pop()
        if t not in out:
            out.add(t)
            todo.extend(prereqs.get(t, []))
    return out


def commands(block: Block) -> list[str]:
    """The block's command lines: comments, blank lines and continuations folded away."""
    text = re.sub(r"\\\n", " ", block.text)
    out = []
    for line in text.splitlines():
        code = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if code:
            out.append(code)
    return out


# --- the tests --------------------------------------------------------------------------------------
