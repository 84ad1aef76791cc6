"""docs/migration.md stays complete: a heading per hazard code, every class, every SDK name and version,
every ``spec.workloadIdentity`` field with its default, and the settings nmisim chose where the issue is
silent. The lists come from the engine, so a new code, class, package or field fails here until it is
documented."""

from __future__ import annotations

import itertools
import re

import pytest
from tests.docblocks import ROOT, anchors, doc_files, links

from nmisim.engine import config as C
from nmisim.engine.findings import SEVERITY_ERROR, SEVERITY_INFO, SEVERITY_WARNING
from nmisim.engine.migration import classify, hazards, sdk

DOC = ROOT / "docs" / "migration.md"
TEXT = DOC.read_text()
HEADING = re.compile(r"^### (\S+)\s*$", re.M)


def _section(code: str) -> str:
    """The text under ``### code`` up to the next heading."""
    m = re.search(rf"^### {re.escape(code)}\s*$(.*?)(?=^#{{1,3}} )", TEXT + "\n# end", re.M | re.S)
    assert m is not None, f"no ### {code} heading in docs/migration.md"
    return m.group(1)


def _line(cells: str) -> str:
    """The table row whose first cell is ``cells``."""
    row = next((ln for ln in TEXT.splitlines() if ln.startswith(f"| {cells} |")), None)
    assert row is not None, f"no table row starting with {cells!r}"
    return row


def test_the_doc_is_indexed() -> None:
    assert DOC in doc_files()
    targets = {t.split("#")[0] for _, t in links(ROOT / "docs" / "cli.md")}
    assert "migration.md" in targets, "docs/cli.md does not link migration.md"


@pytest.mark.parametrize("code", sorted(hazards.SEVERITY))
def test_every_hazard_has_a_section_with_its_severity_fix_and_source(code: str) -> None:
    body = _section(code)
    level = hazards.SEVERITY[code]
    assert level in (SEVERITY_ERROR, SEVERITY_WARNING, SEVERITY_INFO)
    m = re.search(r"^- Severity: (\w+)\.$", body, re.M)
    assert m is not None and m.group(1) == level, f"{code}: the doc's severity differs from hazards.SEVERITY"
    for part in ("- Means:", "- Raised", "- Fix:", "- Upstream:"):
        assert part in body, f"{code}: no {part!r} line"


def test_no_hazard_heading_without_a_code() -> None:
    """A hazard section whose code the engine no longer has is a stale doc."""
    hz = TEXT.split("## Hazards", 1)[1].split("\n## ", 1)[0]
    documented = set(HEADING.findall(hz))
    assert documented == set(hazards.SEVERITY), documented ^ set(hazards.SEVERITY)


def test_hazard_links_resolve_to_their_sections() -> None:
    have = anchors(DOC)
    for code in hazards.SEVERITY:
        assert code.lower() in have
    for target in re.findall(r"\]\(#([^)]+)\)", TEXT):
        assert target in have, f"#{target}"


def test_every_class_is_defined_worst_first() -> None:
    rows = [_line(f"`{c}`") for c in classify.CLASSES]
    positions = [TEXT.index(r) for r in rows]
    assert positions == sorted(positions), "the classes table is not in classify.CLASSES order (worst first)"
    assert "classIfSDKTooOld" in TEXT
    for phase in classify.PHASES:
        assert f"`{phase}`" in TEXT


def test_request_shapes() -> None:
    for shape in (classify.SHAPE_DEFAULT, classify.SHAPE_CLIENT_ID, classify.SHAPE_RES_ID):
        assert f"`{shape}" in TEXT, shape


@pytest.mark.parametrize("name", sorted(sdk.PACKAGES))
def test_every_sdk_package_with_both_versions(name: str) -> None:
    pkg = sdk.PACKAGES[name]
    row = _line(f"`{name}`")
    assert f"`{pkg.upstream}`" in row
    cells = [c.strip() for c in row.strip("|").split("|")]
    working = ".".join(map(str, pkg.working)) if pkg.working else "—"
    assert cells[2] == working, f"{name}: min working {cells[2]!r}, engine {working!r}"
    assert cells[3] == ".".join(map(str, pkg.workload_identity)), name


def test_msal_and_raw_imds_names_and_capabilities() -> None:
    for name in (*sdk.MSAL, sdk.RAW_IMDS):
        assert f"`{name}`" in TEXT, name
    for cap in sdk.CAPABILITIES:
        assert _line(f"`{cap}`")
    assert sdk.ANNOTATION in TEXT


def test_every_setting_with_its_default() -> None:
    d = C.WorkloadIdentityConfig()
    defaults = {
        "issuer": '`""`',
        "tenantID": f"`{d.tenant_id}`",
        "webhookVersion": f"`{d.webhook_version}`",
        "audience": f"`{d.audience}`",
        "kubernetesVersion": f"`{d.kubernetes_version}`",
        "platform": f"`{d.platform}`",
        "podLinkLocalAccess": f"`{d.pod_link_local_access}`",
        "federatedCredentials": "`[]`",
        "sdks": "`[]`",
        "resourceGroup": '`""`',
        "clusterName": '`""`',
    }
    assert set(defaults) == set(C._WI_FIELDS), "a spec.workloadIdentity field is missing from this test"
    for field, default in defaults.items():
        cells = [c.strip() for c in _line(f"`{field}`").strip("|").split("|")]
        assert cells[1] == default, f"{field}: doc {cells[1]!r}, engine {default!r}"


@pytest.mark.parametrize("field", ["tenantID", "kubernetesVersion", "platform", "podLinkLocalAccess"])
def test_defaults_chosen_by_nmisim_say_so(field: str) -> None:
    assert "nmisim decision" in _line(f"`{field}`")


def test_emitted_files_and_cli_flags() -> None:
    for name in (
        "serviceaccounts.yaml",
        "kustomization.yaml",
        "apply.sh",
        "federated-credentials.sh",
        "simulationconfig-patch.yaml",
        "cleanup.sh",
        "patches/<kind>-<namespace>-<name>.yaml",
    ):
        assert f"`{name}`" in TEXT, name
    for flag in ("--verify", "--emit DIR", "--fail-on ", "--fail-on-class", "--pods", "--after", "--phase"):
        assert flag in TEXT, flag


def test_the_comparison_table_has_three_sources_per_case() -> None:
    head = "| case | `azwi podidentity detect` | official guide | nmisim |"
    assert head in TEXT
    rows = list(itertools.takewhile(lambda r: r.startswith("|"), TEXT.split(head, 1)[1].splitlines()[2:]))
    assert len(rows) >= 20
    for r in rows:
        cells = [c.strip() for c in r.strip("|").split("|")]
        assert len(cells) == 4 and all(cells), r
