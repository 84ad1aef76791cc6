#!/usr/bin/env python3
"""nmisim's krew plugin: build its archive and keep plugins/krew/nmisim.yaml in step with it.

    hack/krew_plugin.py                 # dist/krew/kubectl-nmisim-vX.Y.Z.zip; version, uri, sha256 -> yaml
    hack/krew_plugin.py --check         # exit 1 if the manifest's version, sha256 or archive name are stale
    hack/krew_plugin.py --out DIR       # the archive into DIR instead of dist/krew
    hack/krew_plugin.py --base-url URL  # uri = URL/vX.Y.Z/kubectl-nmisim-vX.Y.Z.zip (where you publish it)

The archive holds one file, the launcher plugins/krew/kubectl-nmisim (krew's ``bin``), which runs the nmisim
CLI installed on the machine: nmisim is a Python program with compiled dependencies (pydantic-core), which a
krew archive cannot carry for every platform and Python. It is a stored (uncompressed) zip with fixed
timestamps and modes, so the same launcher gives the same bytes, and the same sha256, on any machine and
Python (a gzip stream would depend on the zlib that wrote it). The plugin's version is nmisim's.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DIR = ROOT / "plugins" / "krew"
MANIFEST = PLUGIN_DIR / "nmisim.yaml"
LAUNCHER = PLUGIN_DIR / "kubectl-nmisim"
DEFAULT_OUT = ROOT / "dist" / "krew"
#: the reserved domain (RFC 2606) until nmisim publishes its archives somewhere
DEFAULT_BASE_URL = "https://example.invalid/nmisim/releases"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold


def nmisim_version() -> str:
    """``__version__`` of operator/nmisim/__init__.py, read as text (nothing of nmisim is imported)."""
    text = (ROOT / "operator" / "nmisim" / "__init__.py").read_text()
    m = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    if m is None:
        raise SystemExit("operator/nmisim/__init__.py has no __version__")
    return m[1]


def archive_name(version: str) -> str:
    return f"kubectl-nmisim-v{version}.zip"


def build_archive(dest: Path) -> str:
    """Write the archive to ``dest``; return its sha256 (hex)."""
    entry = zipfile.ZipInfo(LAUNCHER.name, date_time=_ZIP_EPOCH)
    entry.create_system = 3  # Unix: krew extracts with the mode below
    entry.external_attr = (0o100755 & 0xFFFF) << 16
    entry.compress_type = zipfile.ZIP_STORED
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w") as zf:
        zf.writestr(entry, LAUNCHER.read_bytes())
    return hashlib.sha256(dest.read_bytes()).hexdigest()


def _set(text: str, key: str, indent: int, value: str) -> str:
    """``text`` with the one line ``<indent>key: ...`` set to ``value``."""
    pattern = re.compile(rf"^( {{{indent}}}{key}: ).*$", re.MULTILINE)
    if len(pattern.findall(text)) != 1:
        raise SystemExit(f"{MANIFEST.relative_to(ROOT)}: expected one '{key}:' line at indent {indent}")
    return pattern.sub(lambda m: m[1] + value, text)


def _get(text: str, key: str, indent: int) -> str:
    m = re.search(rf"^ {{{indent}}}{key}: (.*)$", text, re.MULTILINE)
    return m[1].strip().strip('"') if m else ""


def manifest_text(text: str, version: str, uri: str, sha256: str) -> str:
    text = _set(text, "version", 2, f"v{version}")
    text = _set(text, "uri", 4, uri)
    return _set(text, "sha256", 4, f'"{sha256}"')


def stale(text: str, version: str, sha256: str) -> list[str]:
    """What in the manifest does not match the archive built now (the uri's host is the publisher's)."""
    problems = []
    if _get(text, "version", 2) != f"v{version}":
        problems.append(f"version is {_get(text, 'version', 2)!r}, nmisim's is v{version}")
    if _get(text, "sha256", 4) != sha256:
        problems.append(f"sha256 is {_get(text, 'sha256', 4)!r}, the archive's is {sha256}")
    if not _get(text, "uri", 4).endswith("/" + archive_name(version)):
        problems.append(f"uri {_get(text, 'uri', 4)!r} does not end with /{archive_name(version)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--check", action="store_true", help="compare the manifest with the archive; write nothing"
    )
    ap.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="directory for the archive (default: dist/krew)"
    )
    ap.add_argument(
        "--base-url",
        help="where the archive is published (default: the manifest's, or the placeholder "
        f"{DEFAULT_BASE_URL})",
    )
    args = ap.parse_args(argv)
    version = nmisim_version()
    text = MANIFEST.read_text()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            sha256 = build_archive(Path(tmp) / archive_name(version))
        problems = stale(text, version, sha256)
        for p in problems:
            print(f"{MANIFEST.relative_to(ROOT)}: {p} (run make krew-archive and commit it)", file=sys.stderr)
        return 1 if problems else 0
    archive = args.out / archive_name(version)
    sha256 = build_archive(archive)
    current = _get(text, "uri", 4)
    if args.base_url is None and current.endswith("/" + archive_name(version)):
        uri = current  # a location written before (a publisher's) stays
    else:
        uri = f"{(args.base_url or DEFAULT_BASE_URL).rstrip('/')}/v{version}/{archive_name(version)}"
    MANIFEST.write_text(manifest_text(text, version, uri, sha256))
    print(archive)
    print(f"wrote {MANIFEST.relative_to(ROOT)}: v{version}, sha256 {sha256}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
