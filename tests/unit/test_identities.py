"""Standard-mode MIC simulation, assigned-identity states and NMI's retry schedule, managed mode
(nmi-semantics §1 "Matching in standard mode", "Matching in managed mode", §2 standard/managed mode)."""

from __future__ import annotations

import pytest
from factories import CID1, CID2, assigned, binding, config, ident, pod, world

from nmisim.engine.identities import poll_assigned, redact_client_id
from nmisim.engine.models import AzureIdentityBinding


def codes(r: object) -> set[str]:
    return {f.code for f in r.findings}  # type: ignore[attr-defined]


def test_selector_is_exact_and_case_sensitive_1() -> None:
    p = pod("p", "ns", {"aadpodidbinding": "Web"})
    w = world(ident("id", "ns"), binding("b", "ns", "id", "web"), p)
    r = w.evaluate(p)
    assert r.identities == ()
    assert r.token_request.status == 404
    assert {"NoIdentity", "SelectorCaseMismatch"} <= codes(r)


def test_cross_namespace_binding_is_allowed_by_default_1() -> None:
    p = pod("p", "apps", {"aadpodidbinding": "s"})
    w = world(ident("id", "platform"), binding("b", "platform", "id", "s"), p)
    r = w.evaluate(p)
    assert r.identities == ("platform/id",)
    assert r.token_request.status == 200
    assert "CrossNamespaceBinding" in codes(r)


@pytest.mark.parametrize(
    ("force", "annotated", "id_ns", "b_ns", "expected"),
    [
        (True, False, "apps", "apps", ("apps/id",)),
        (True, False, "platform", "platform", ()),
        (False, True, "platform", "platform", ()),  # annotation alone makes it namespaced
        (False, True, "apps", "apps", ("apps/id",)),
        (False, False, "platform", "platform", ("platform/id",)),
    ],
)
def test_force_namespaced_and_annotation_1(
    force: bool, annotated: bool, id_ns: str, b_ns: str, expected: tuple[str, ...]
) -> None:
    p = pod("p", "apps", {"aadpodidbinding": "s"})
    w = world(ident("id", id_ns, namespaced=annotated), binding("b", b_ns, "id", "s"), p,
              cfg=config({"forceNamespaced": force}))  # fmt: skip
    r = w.evaluate(p)
    assert r.identities == expected
    if not expected:
        assert "NamespacedBindingIgnored" in codes(r)
        assert r.token_request.status == 404


def test_binding_to_missing_identity_is_skipped_1() -> None:
    p = pod("p", "ns", {"aadpodidbinding": "s"})
    w = world(binding("b", "ns", "ghost", "s"), p)
    r = w.evaluate(p)
    assert r.identities == ()
    assert {"BindingIdentityMissing", "NoIdentity"} <= codes(r)


def test_identity_looked_up_in_binding_namespace_1() -> None:
    p = pod("p", "ns", {"aadpodidbinding": "s"})
    w = world(ident("id", "ns"), binding("b", "other", "id", "s"), p)  # id exists only in ns
    assert w.evaluate(p).identities == ()


def test_pod_without_label_gets_nothing_in_standard_mode_1() -> None:
    p = pod("p", "ns", {})
    w = world(ident("id", "ns"), binding("b", "ns", "id", ""), p)  # empty selector
    assert w.evaluate(p).identities == ()


def test_ambiguous_identities_sorted_1() -> None:
    p = pod("p", "ns", {"aadpodidbinding": "s"})
    w = world(ident("z", "ns", CID2), ident("a", "ns", CID1), binding("b1", "ns", "z", "s"),
              binding("b2", "ns", "a", "s"), p)  # fmt: skip
    r = w.evaluate(p)
    assert r.identities == ("ns/a", "ns/z")
    assert r.ambiguous is True
    assert r.to_json()["ambiguous"] is True
    assert "AmbiguousIdentity" in codes(r)


def test_same_identity_name_in_two_namespaces_collides_issue_1065() -> None:
    p = pod("p", "ns", {"aadpodidbinding": "s"})
    w = world(ident("id", "a", CID1), ident("id", "b", CID2), binding("x", "a", "id", "s"),
              binding("y", "b", "id", "s"), p)  # fmt: skip
    r = w.evaluate(p)
    assert r.identities == ("a/id",)
    assert "AssignedIdentityNameCollision" in codes(r)


def test_pod_without_node_is_evaluated_as_if_scheduled() -> None:
    p = pod("p", "ns", {"aadpodidbinding": "s"}, node="", phase=None)
    w = world(ident("id", "ns"), binding("b", "ns", "id", "s"), p)
    assert w.evaluate(p).token_request.status == 200


# --- NMI's retry loop (nmi-semantics §2 "Standard mode identity selection") ---------------------------


@pytest.mark.parametrize(
    ("statuses", "status", "wait", "fragment"),
    [
        ([], 404, 80, "in CREATED state failed after 16 attempts, retry duration [5]s"),
        (["Created"], 404, 100, "in ASSIGNED state failed after 20 attempts, retry duration [5]s"),
        (["Assigned"], 200, 0, None),
        ([""], 200, 0, None),  # legacy empty status counts as assigned
        (["Unassigned"], 404, 80, "CREATED state failed after 16 attempts"),
        (["Created", "Assigned"], 200, 0, None),
    ],
)
def test_assigned_identity_states_drive_wait(
    statuses: list[str], status: int, wait: int, fragment: str | None
) -> None:
    p = pod("p", "ns", {"aadpodidbinding": "s"})
    objs: list[object] = [ident("id", "ns"), binding("b", "ns", "id", "s"), p]
    for i, st in enumerate(statuses):
        objs.append(assigned(f"p-ns-id{i}", "p", "ns", ident(f"id{i}", "ns", f"cid-{i}-0000000000"), st))
    if not statuses:  # AzureAssignedIdentity objects exist, but none for this pod -> MIC is simulated
        objs.append(assigned("other", "q", "ns", ident("id", "ns"), "Assigned"))
    r = world(*objs).evaluate(p)
    if not statuses:
        assert r.token_request.status == 200  # simulated MIC: binding match counts as assigned
        return
    assert r.token_request.status == status
    assert r.token_request.wait_seconds == wait
    if fragment:
        assert fragment in (r.token_request.error or "")
        assert r.token_request.error.endswith("Check MIC pod logs for identity assignment errors")  # type: ignore[union-attr]
    if statuses == ["Created"]:
        assert "AssignedIdentityStuckCreated" in codes(r)


@pytest.mark.parametrize(
    ("c", "a", "i", "created", "wait", "attempts"),
    [(16, 4, 5, False, 80, 16), (16, 4, 5, True, 100, 20), (1, 1, 1, False, 1, 1), (1, 1, 1, True, 2, 2),
     (3, 0, 2, False, 6, 3), (0, 0, 5, False, 0, 0), (2, 3, 0, True, 0, 5)],
)  # fmt: skip
def test_retry_schedule_from_config(c: int, a: int, i: int, created: bool, wait: int, attempts: int) -> None:  # noqa: PLR0917
    from nmisim.engine.identities import AssignedEntry  # noqa: PLC0415

    nmi = config({"retryAttemptsForCreated": c, "retryAttemptsForAssigned": a,
                  "findIdentityRetryIntervalSeconds": i}).nmi  # fmt: skip
    entries = [AssignedEntry(ident("id", "ns"), "Created", "x")] if created else []
    out = poll_assigned(entries, "ns", "p", nmi)
    assert out.entries is None
    assert out.wait_seconds == wait
    assert f"failed after {attempts} attempts, retry duration [{i}]s" in (out.error or "")


def test_assigned_identity_on_other_node_is_invisible() -> None:
    p = pod("p", "ns", {"aadpodidbinding": "s"}, node="node-2")
    a = assigned("p-ns-id", "p", "ns", ident("id", "ns"), "Assigned", node="node-1")
    r = world(ident("id", "ns"), binding("b", "ns", "id", "s"), a, p).evaluate(p)
    assert r.token_request.status == 404
    assert "AssignedIdentityOtherNode" in codes(r)


def test_client_id_matching_polling_ignores_case_selection_does_not() -> None:
    """§2: polling compares case-insensitively, the final pick case-sensitively -> 404 (inference)."""
    from nmisim.engine.http import HttpRequest  # noqa: PLC0415

    p = pod("p", "ns", {"aadpodidbinding": "s"})
    w = world(ident("id", "ns", CID1), binding("b", "ns", "id", "s"), p)
    q = (("resource", "r"), ("client_id", CID1.upper()))
    res = w.request(HttpRequest(query=q), pod=p)
    assert res.status == 404
    assert res.body == f"no azure identity found for request clientID {redact_client_id(CID1.upper())}\n"
    assert res.wait_seconds == 0
    ok = w.request(HttpRequest(query=(("resource", "r"), ("client_id", CID1))), pod=p)
    assert ok.status == 200 and ok.identity == "ns/id"


def test_unbound_client_id_waits_80s() -> None:
    from nmisim.engine.http import HttpRequest  # noqa: PLC0415

    p = pod("p", "ns", {"aadpodidbinding": "s"})
    w = world(ident("id", "ns", CID1), binding("b", "ns", "id", "s"), p)
    res = w.request(HttpRequest(query=(("resource", "r"), ("client_id", CID2))), pod=p)
    assert res.status == 404
    assert res.wait_seconds == 80
    assert res.body.startswith(f"clientID in request: {redact_client_id(CID2)}, getting assigned identities")


def test_namespace_filter_leaving_nothing_panics_500() -> None:
    """§2 step 10 (inference): AzureAssignedIdentity with a namespaced identity in another namespace."""
    p = pod("p", "apps", {"aadpodidbinding": "s"})
    other = ident("id", "platform", namespaced=True)
    r = world(assigned("a", "p", "apps", other, "Assigned"), p).evaluate(p)
    assert r.token_request.status == 500
    assert "index out of range" in (r.token_request.error or "")


def test_redact_client_id() -> None:
    assert redact_client_id("aabc0000-a83v-9h4m-000j-2c0a66b0c1f9") == "aabc##### REDACTED #####c1f9"
    assert redact_client_id("short") == "short"
    assert redact_client_id("") == ""


# --- managed mode (nmi-semantics §2 "Managed mode") ---------------------------------------------------

MANAGED = {"operationMode": "managed", "forceNamespaced": True}


def test_managed_mode_only_pod_namespace_no_wait() -> None:
    p = pod("p", "apps", {"aadpodidbinding": "s"})
    cfg = config(MANAGED, {"userAssigned": [{"clientID": CID1}]})
    w = world(ident("id", "platform"), binding("b", "platform", "id", "s"), p, cfg=cfg)
    r = w.evaluate(p)
    assert r.identities == ()
    assert r.token_request.status == 404
    assert r.token_request.wait_seconds == 0
    assert r.token_request.error == "no azure identity found for request clientID "
    w.upsert(ident("id", "apps"))
    w.upsert(binding("b", "apps", "id", "s"))
    r = w.evaluate(p)
    assert r.token_request.status == 200 and r.token_request.identity == "apps/id"


def test_managed_mode_empty_selector_quirk() -> None:
    p = pod("p", "apps", {})
    cfg = config(MANAGED, {"userAssigned": [{"clientID": CID1}]})
    w = world(ident("id", "apps"), binding("b", "apps", "id", ""), p, cfg=cfg)
    r = w.evaluate(p)
    assert r.identities == ("apps/id",)
    assert r.token_request.status == 200
    assert "EmptySelectorBinding" in codes(r)


def test_managed_mode_identity_must_be_on_vm() -> None:
    p = pod("p", "apps", {"aadpodidbinding": "s"})
    w = world(ident("id", "apps", CID2), binding("b", "apps", "id", "s"), p,
              cfg=config(MANAGED, {"userAssigned": [{"clientID": CID1}]}))  # fmt: skip
    r = w.evaluate(p)
    assert r.token_request.status == 403
    assert "Identity not found" in (r.token_request.error or "")
    assert "IdentityNotOnNode" in codes(r)


def test_capitalised_selector_is_ignored_6_15() -> None:
    p = pod("p", "ns", {"aadpodidbinding": "s"})
    old = AzureIdentityBinding.from_k8s(
        {"kind": "AzureIdentityBinding", "metadata": {"name": "old", "namespace": "ns"},
         "spec": {"AzureIdentity": "id", "Selector": "s"}}
    )  # fmt: skip
    r = world(ident("id", "ns"), old, p).evaluate(p)
    assert r.token_request.status == 404
    assert "CapitalisedFields" in codes(r)
