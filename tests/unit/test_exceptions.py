"""AzurePodIdentityException matching (nmi-semantics §1 "AzurePodIdentityException")."""

from __future__ import annotations

import pytest
from factories import exc, pod, world
from hypothesis import given, settings
from hypothesis import strategies as st

from nmisim.engine.exceptions import ExceptionIndex, is_pod_excepted
from nmisim.engine.fold import equal_fold, fold
from nmisim.engine.models import PodIdentityException

CASES = [
    # (name, exception ns, podLabels, pod ns, pod labels, expected match)
    ("same namespace, one label", "ns", {"app": "mic"}, "ns", {"app": "mic"}, True),
    (
        "other namespace never matches (§1 same namespace only)",
        "other",
        {"app": "mic"},
        "ns",
        {"app": "mic"},
        False,
    ),
    ("any one label is enough (OR)", "ns", {"app": "mic", "component": "x"}, "ns", {"app": "mic"}, True),
    ("value compared case-insensitively", "ns", {"app": "MIC"}, "ns", {"app": "mic"}, True),
    ("key compared exactly", "ns", {"App": "mic"}, "ns", {"app": "mic"}, False),
    ("empty podLabels match nothing", "ns", {}, "ns", {"app": "mic"}, False),
    ("different value", "ns", {"app": "mic"}, "ns", {"app": "micro"}, False),
    ("empty value matches empty label", "ns", {"app": ""}, "ns", {"app": ""}, True),
    ("label absent", "ns", {"app": "mic"}, "ns", {"component": "mic"}, False),
    ("pod without labels", "ns", {"app": "mic"}, "ns", {}, False),
    ("namespace compared exactly", "NS", {"app": "mic"}, "ns", {"app": "mic"}, False),
]


@pytest.mark.parametrize(
    ("case", "ens", "plabels", "pns", "labels", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_exception_matching_rules_nmi_semantics_1(  # noqa: PLR0917
    case: str, ens: str, plabels: dict[str, str], pns: str, labels: dict[str, str], expected: bool
) -> None:
    w = world(exc("e", ens, plabels))
    p = pod("p", pns, labels)
    assert (w.matching_exceptions(p) == ["e"]) is expected, case
    # the naive transcription agrees
    assert is_pod_excepted(labels, [e for e in w.exceptions() if e.namespace == pns]) is expected


def test_all_matching_exceptions_are_reported_sorted() -> None:
    w = world(exc("zeta", "ns", {"a": "1"}), exc("alpha", "ns", {"b": "2"}), exc("mid", "ns", {"c": "3"}))
    assert w.matching_exceptions(pod("p", "ns", {"a": "1", "b": "2"})) == ["alpha", "zeta"]


def test_index_follows_upsert_and_remove() -> None:
    w = world(exc("e", "ns", {"a": "1"}))
    p = pod("p", "ns", {"a": "1", "b": "2"})
    assert w.matching_exceptions(p) == ["e"]
    w.upsert(exc("e", "ns", {"b": "3"}))  # replaced: old labels gone
    assert w.matching_exceptions(p) == []
    w.upsert(exc("e", "ns", {"b": "2"}))
    assert w.matching_exceptions(p) == ["e"]
    assert w.remove("AzurePodIdentityException", "ns", "e") is True
    assert w.matching_exceptions(p) == []
    assert w.remove("AzurePodIdentityException", "ns", "e") is False


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("mic", "MIC", True),
        ("Mic", "mIC", True),
        ("k", "\u212a", True),
        ("s", "\u017f", True),
        ("ab", "abc", False),
    ],
)
def test_equal_fold_like_go(a: str, b: str, equal: bool) -> None:
    assert equal_fold(a, b) is equal
    assert (fold(a) == fold(b)) is equal


# --- property: indexed matching == direct transcription of NMI's IsPodExcepted -----------------------

KEYS = st.sampled_from(["app", "component", "tier", "App", "kubernetes.azure.com/managedby"])
BASE_VALUES = st.sampled_from(["mic", "aks", "web", "", "x1"])
NAMESPACES = st.sampled_from(["default", "kube-system", "apps"])


@st.composite
def cased(draw: st.DrawFn) -> str:
    v = draw(BASE_VALUES)
    flips = draw(st.lists(st.booleans(), min_size=len(v), max_size=len(v)))
    return "".join(c.upper() if f else c for c, f in zip(v, flips, strict=True))


@st.composite
def exceptions_st(draw: st.DrawFn) -> list[PodIdentityException]:
    n = draw(st.integers(0, 8))
    out = []
    for i in range(n):
        labels = draw(st.dictionaries(KEYS, cased(), max_size=3))
        out.append(exc(f"e{i}", draw(NAMESPACES), labels))
    return out


def _oracle(pod_ns: str, labels: dict[str, str], excs: list[PodIdentityException]) -> list[str]:
    """Direct transcription: for each exception in the pod's namespace, for each podLabel, EqualFold."""
    names = []
    for e in excs:
        if e.namespace != pod_ns:
            continue
        for k, v in e.pod_labels.items():
            if k in labels and labels[k].lower() == v.lower():
                names.append(e.name)
                break
    return sorted(names)


@settings(max_examples=300, deadline=None)
@given(excs=exceptions_st(), pod_ns=NAMESPACES, labels=st.dictionaries(KEYS, cased(), max_size=4))
def test_indexed_matching_equals_nmi_loop_property(
    excs: list[PodIdentityException], pod_ns: str, labels: dict[str, str]
) -> None:
    idx = ExceptionIndex()
    for e in excs:
        idx.add(e)
    expected = _oracle(pod_ns, labels, excs)
    assert idx.match(pod_ns, labels) == expected
    assert is_pod_excepted(labels, [e for e in excs if e.namespace == pod_ns]) is bool(expected)
    # removing every exception empties the index
    for e in excs:
        idx.remove(e.namespace, e.name)
    assert idx.match(pod_ns, labels) == []
