"""The docs (README.md and docs/*.md) cannot rot: every command they show is in a fenced `sh` block
marked with how it is tested, every relative link resolves, and the README stays short.

Markers, in the block's info string (```` ```sh test ````):

- ``test``: tests/integration/test_docs_commands.py runs the block against the cluster (bash -euo
  pipefail, a temporary directory, exit 0 wanted). Only what is safe on a shared running cluster, quick
  and idempotent.
- ``ci``: `.ci/run` runs it. `.ci/run` runs exactly two make targets, ``make test`` and ``make
  test-faults``; with their prerequisites in the Makefile that is ``test``, ``test-faults``,
  ``install``, ``binaries``, ``host-deps``, ``lint`` and ``image-if-node`` (:func:`ci_make_targets`
  derives the set from `.ci/run` and the Makefile, so it follows them). A block made only of those
  ``make`` targets needs nothing more; any other block (``make demo``, ``make image``, ``make
  cluster-down``, kubectl commands a CI test runs) starts with a ``# ci: ...`` comment naming the CI step
  that exercises it. ``make demo`` itself is not run by CI.
- ``manual``: needs something this machine lacks (Docker Hub, kind, a cluster free for it); its first
  line is a ``# manual: <reason>`` comment.

Output samples are ``text`` blocks. No cluster is needed here.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
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


def test_there_are_docs_and_blocks_of_each_kind() -> None:
    names = {p.name for p in doc_files()}
    assert {"README.md", "verdicts.md", "cli.md", "configuration.md", "troubleshooting.md"} <= names
    assert {"differences.md", "operations.md", "performance.md", "development.md"} <= names
    assert (ROOT / "docs" / "README.md").exists()
    for marker in MARKERS:
        assert sh_blocks(marker), f"no ```sh {marker} block anywhere"


def test_readme_is_short() -> None:
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes, over {README_MAX_BYTES}: move it to docs/"


def test_every_fenced_block_names_its_language() -> None:
    bare = [b.where for b in all_blocks() if not b.language]
    assert not bare, f"fenced blocks without a language (output samples are ```text): {bare}"


def test_command_blocks_are_sh() -> None:
    other = [f"{b.where} ({b.language})" for b in all_blocks() if b.language in SHELL_LANGUAGES - {"sh"}]
    assert not other, f"commands go in ```sh blocks with a marker, not: {other}"


def test_every_sh_block_has_a_marker() -> None:
    bad = [f"{b.where} ({b.info!r})" for b in sh_blocks() if b.marker not in MARKERS]
    assert not bad, f"```sh blocks need one of {MARKERS} after sh: {bad}"


def test_manual_blocks_say_why() -> None:
    bad = [b.where for b in sh_blocks("manual") if not re.match(r"^# manual: \S.{9,}", b.first_line)]
    assert not bad, f"```sh manual blocks start with '# manual: <reason>': {bad}"


def test_ci_blocks_are_what_ci_runs_or_say_what_runs_them() -> None:
    targets = ci_make_targets()
    assert {"test", "test-faults"} <= targets
    bad = []
    for b in sh_blocks("ci"):
        if re.match(r"^# ci: \S.{9,}", b.first_line):
            continue
        for cmd in commands(b):
            words = shlex.split(cmd)
            if len(words) != 2 or words[0] != "make" or words[1] not in targets:
                bad.append(f"{b.where}: {cmd!r}")
    assert not bad, (
        f"```sh ci blocks hold only make targets .ci/run reaches ({sorted(targets)}) "
        f"or start with '# ci: <what runs it>': {bad}"
    )


def test_ci_make_targets_follow_the_makefile() -> None:
    targets = ci_make_targets()
    assert {"install", "binaries", "lint"} <= targets
    assert "demo" not in targets and "e2e-kind" not in targets


def test_test_blocks_have_commands_and_no_cluster_lifecycle() -> None:
    """`test` blocks run on the one shared cluster: never start, stop or restart it, never run the suites."""
    forbidden = re.compile(
        r"\bmake\s+(test|test-\w+|demo|cluster-\w+|bench|clean|e2e-kind)\b"
        r"|hack/cluster\.sh\s+(up|down|restart|stop|start|node-up|node-down)\b"
        r"|hack/(test|demo|kind-e2e)\.sh(?!\s+--help)|\bpytest\b|\bkind\s+create\b"
    )
    for b in sh_blocks("test"):
        cmds = commands(b)
        assert cmds, f"{b.where}: a test block without commands"
        for cmd in cmds:
            assert not forbidden.search(cmd), f"{b.where}: {cmd!r} must not be a ```sh test block"


def test_every_doc_is_one_click_from_the_readme() -> None:
    readme_targets = {t.split("#")[0] for _, t in links(README)}
    for p in doc_files()[1:]:
        assert str(p.relative_to(ROOT)) in readme_targets, f"README.md does not link {p.relative_to(ROOT)}"


def test_docs_index_links_every_doc() -> None:
    index = ROOT / "docs" / "README.md"
    targets = {t.split("#")[0] for _, t in links(index)}
    for p in doc_files()[1:]:
        if p != index:
            assert p.name in targets, f"docs/README.md does not link {p.name}"


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for line, target in links(doc):
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{doc.name}:{line}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{doc.name}:{line}: {target} (no heading #{anchor} in {dest.name})")
    assert not broken, "\n".join(broken)


def test_no_section_numbers_left() -> None:
    """Sections are linked by name: no numbered headings, no "section 5" cross-references."""
    bad = []
    for p in doc_files():
        fenced = {n for b in blocks(p) for n in range(b.line, b.line + b.text.count("\n") + 2)}
        for n, line in enumerate(p.read_text().splitlines(), start=1):
            if n in fenced:
                continue
            if re.match(r"^#{1,6} \d+\.", line) or re.search(r"\bsection \d", line, re.I):
                bad.append(f"{p.name}:{n}: {line.strip()}")
    assert not bad, "\n".join(bad)


# --- the checker itself ------------------------------------------------------------------------------


def test_parser_reads_markers_indented_blocks_and_links(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "# Title: `a` / b\n\nSee [y](y.md#part) and `[not](a link)`.\n\n"
        "```sh test\necho one \\\n  two   # a comment\n# only a comment\n```\n\n"
        "- item\n\n  ```sh manual\n  # manual: needs a thing we lack\n  cat <<'EOF'\n  x\n  EOF\n  ```\n\n"
        "```\n## not a heading\n```\n"
    )
    got = blocks(doc)
    assert [(b.line, b.language, b.marker) for b in got] == [
        (5, "sh", "test"),
        (13, "sh", "manual"),
        (20, "", None),
    ]
    assert commands(got[0]) == ["echo one    two"]
    assert got[1].text == "# manual: needs a thing we lack\ncat <<'EOF'\nx\nEOF\n"
    assert links(doc) == [(3, "y.md#part")]
    assert anchors(doc) == {"title-a--b"}
