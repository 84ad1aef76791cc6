"""Which credential an application gets from its SDK (workload-identity.md §5; the closing list's rule 8).
Upstream: AWI ``docs/book/src/topics/language-specific-examples/azure-identity-sdk.md`` @ 56d89dd (the
"min working" and "min WorkloadIdentityCredential" columns), the MS Learn overview (C++ minimum),
``examples/msal-*`` (MSAL reads the token file), azure-sdk-for-go CHANGELOG 0.12.0.
"""

from __future__ import annotations

import pytest

from nmisim.engine.config import SDKRule
from nmisim.engine.migration import sdk
from nmisim.engine.migration.sdk import (
    CAP_IMDS,
    CAP_LEGACY,
    CAP_MSAL,
    CAP_UNKNOWN,
    CAP_WORKLOAD_IDENTITY,
    SDKError,
    capability,
    parse,
)

#: azure-identity-sdk.md @ 56d89dd, written out again here (not read from the engine): package → (working, WI)
TABLE = {
    "go-azidentity": ("1.3.0", "1.3.0"),
    "dotnet-azure-identity": ("1.5.0", "1.9.0"),
    "js-azure-identity": ("2.0.0", "3.2.0"),
    "python-azure-identity": ("1.7.0", "1.13.0"),
    "java-azure-identity": ("1.4.0", "1.9.0"),
    "cpp-azure-identity": (None, "1.6.0"),
}


def below(v: str) -> str:
    """A version just below ``v`` (x.y.z → x.(y-1).99, or (x-1).99.99)."""
    major, minor, patch = map(int, v.split("."))
    if patch:
        return f"{major}.{minor}.{patch - 1}"
    if minor:
        return f"{major}.{minor - 1}.99"
    return f"{major - 1}.99.99"


def rows() -> list[object]:
    out: list[object] = []
    for name, (working, wi) in TABLE.items():
        src = "azure-identity-sdk.md @ 56d89dd" if name != "cpp-azure-identity" else "MS Learn overview"
        out.append(
            pytest.param(f"{name}=={wi}", CAP_WORKLOAD_IDENTITY, id=f"{src} {name} at WI minimum {wi}")
        )
        out.append(pytest.param(f"{name}==9.0.0", CAP_WORKLOAD_IDENTITY, id=f"{src} {name} well above"))
        if working is not None and working != wi:
            out.append(
                pytest.param(f"{name}=={working}", CAP_LEGACY, id=f"{src} {name} at working {working}")
            )
            out.append(pytest.param(f"{name}=={below(wi)}", CAP_LEGACY, id=f"{src} {name} just below WI"))
            out.append(pytest.param(f"{name}=={below(working)}", CAP_IMDS, id=f"{src} {name} below working"))
        else:
            out.append(pytest.param(f"{name}=={below(wi)}", CAP_IMDS, id=f"{src} {name} below both"))
    return out


@pytest.mark.parametrize(("text", "cap"), rows())
def test_sdk_table(text: str, cap: str) -> None:
    (one,) = parse(text)
    assert one.capability == cap
    name = text.split("==", maxsplit=1)[0]
    if cap == CAP_WORKLOAD_IDENTITY:
        assert one.upgrade_to == ""
    else:
        assert one.upgrade_to == TABLE[name][1], "the plan names the WorkloadIdentityCredential minimum"


@pytest.mark.parametrize(
    ("text", "cap"),
    [
        pytest.param(
            "python-azure-identity==1.12.0", CAP_LEGACY, id="PR azure-sdk-for-python#28536 1.12 via DAC"
        ),
        pytest.param(
            "go-azidentity==v1.8.0", CAP_WORKLOAD_IDENTITY, id="issue example go-azidentity==v1.8.0"
        ),
        pytest.param("js-azure-identity==1.3.0", CAP_IMDS, id="#693 @azure/identity 1.3"),
        pytest.param("python-msal==1.20.0", CAP_MSAL, id="examples/msal-python"),
        pytest.param("go-msal", CAP_MSAL, id="examples/msal-go without a version"),
        pytest.param("imds", CAP_IMDS, id="§5 raw IMDS calls"),
    ],
)
def test_named_cases(text: str, cap: str) -> None:
    assert capability(parse(text)) == cap


@pytest.mark.parametrize(
    ("text", "match"),
    [
        pytest.param(
            "python-azure-identiy==1.13.0", "did you mean python-azure-identity", id="typo did-you-mean"
        ),
        pytest.param("go-azidenty==1.3.0", "did you mean go-azidentity", id="go typo did-you-mean"),
        pytest.param("cobol-identity==1.0", "unknown SDK 'cobol-identity'", id="unknown"),
        pytest.param(
            "python-azure-identity", "expected python-azure-identity==VERSION", id="version missing"
        ),
        pytest.param(
            "python-azure-identity==latest", "expected python-azure-identity==VERSION", id="not a version"
        ),
        pytest.param(" , ", "empty", id="empty list"),
    ],
)
def test_bad_annotation(text: str, match: str) -> None:
    with pytest.raises(SDKError, match=match):
        parse(text)


def test_sdk_error_is_a_value_error() -> None:
    """CLI bad input: a ValueError subclass becomes exit 2."""
    assert issubclass(SDKError, ValueError)


@pytest.mark.parametrize(
    ("text", "cap"),
    [
        pytest.param("python-azure-identity==1.15.0, python-msal==1.2.0", CAP_MSAL, id="WI + MSAL: msal"),
        pytest.param("python-azure-identity==1.15.0,js-azure-identity==2.1.0", CAP_LEGACY, id="WI + legacy"),
        pytest.param("dotnet-azure-identity==1.10.0, imds", CAP_IMDS, id="WI + raw IMDS: imds"),
        pytest.param("java-azure-identity==1.9.0,go-azidentity==1.4.0", CAP_WORKLOAD_IDENTITY, id="WI + WI"),
    ],
)
def test_comma_list_takes_the_worst(text: str, cap: str) -> None:
    sdks = parse(text)
    assert len(sdks) == 2
    assert capability(sdks) == cap


def test_nothing_declared_is_unknown() -> None:
    assert capability(()) == CAP_UNKNOWN


def test_image_rules_first_match_per_image() -> None:
    rules = [
        SDKRule(image="registry/app:*", sdk="python-azure-identity==1.10.0"),
        SDKRule(image="registry/*", sdk="imds"),
    ]
    got = sdk.for_images(["registry/app:2", "registry/cli:1", "other/x"], rules)
    assert [s.name for s in got] == ["python-azure-identity", "imds"]
    assert capability(got) == CAP_IMDS


@pytest.mark.parametrize(
    ("cap", "exchanges"),
    [
        pytest.param(CAP_WORKLOAD_IDENTITY, True, id="§5 DAC order Env -> WI -> MI"),
        pytest.param(CAP_LEGACY, True, id="§5 DAC picks up AZURE_FEDERATED_TOKEN_FILE"),
        pytest.param(CAP_MSAL, True, id="examples/msal-*: client assertion from the file"),
        pytest.param(CAP_IMDS, False, id="§5 raw IMDS"),
        pytest.param(CAP_UNKNOWN, False, id="unknown"),
    ],
)
def test_exchanges_token(cap: str, exchanges: bool) -> None:
    assert sdk.exchanges_token(cap) is exchanges
