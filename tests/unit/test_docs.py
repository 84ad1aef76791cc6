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
from pathlib import Path

import pytest
from tests.docblocks import (
    MARKERS,
    README,
    README_MAX_BYTES,
    ROOT,
    SHELL_LANGUAGES,
    all_blocks,
    anchors,
    blocks,
    ci_make_targets,
    commands,
    doc_files,
    links,
    sh_blocks,
)


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
