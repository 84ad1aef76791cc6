"""Parsing k8s dicts into models and SimulationConfig validation (nmi-semantics §1, §4; product.md §3)."""

from __future__ import annotations

from typing import Any

import pytest

from nmisim.engine.config import ConfigError, SimulationConfig
from nmisim.engine.models import (
    AzureAssignedIdentity,
    AzureIdentity,
    AzureIdentityBinding,
    ModelError,
    Pod,
    PodIdentityException,
)


@pytest.mark.parametrize(
    ("cls", "obj", "message"),
    [
        (Pod, {"metadata": {"name": "p", "labels": ["a", "b"]}}, "metadata.labels: expected a map of strings"),  # noqa: E501
        (Pod, {"metadata": {"name": "p", "labels": {"a": 1}}}, "metadata.labels.a: expected a string, got integer"),  # noqa: E501
        (Pod, {"metadata": {"namespace": "x"}}, "metadata.name: required"),
        (Pod, {"metadata": {"name": "p"}, "spec": {"hostNetwork": "yes"}}, "spec.hostNetwork: expected a boolean"),  # noqa: E501
        (PodIdentityException, {"metadata": {"name": "e"}, "spec": {"podLabels": {"app": True}}},
         "spec.podLabels.app: expected a string, got boolean"),
        (AzureIdentity, {"metadata": {"name": "i"}, "spec": {"type": "0"}}, "spec.type: expected an integer, got string"),  # noqa: E501
        (AzureIdentity, {"metadata": {"name": "i"}, "spec": {"type": True}}, "spec.type: expected an integer"),  # noqa: E501
        (AzureIdentityBinding, {"metadata": {"name": "b"}, "spec": {"selector": 5}}, "spec.selector: expected a string"),  # noqa: E501
        (AzureAssignedIdentity, {"metadata": {"name": "a"}, "spec": {"azureIdentityRef": {"spec": {}}}},
         "spec.azureIdentityRef.metadata.name: required"),
    ],
)  # fmt: skip
def test_model_errors_name_the_field(cls: Any, obj: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelError) as err:
        cls.from_k8s(obj)
    assert str(err.value).startswith(message)
    assert isinstance(err.value, ValueError)


def test_pod_fields() -> None:
    p = Pod.from_k8s(
        {
            "metadata": {"name": "p", "uid": "u1", "resourceVersion": "42", "labels": {"a": "b"}},
            "spec": {"hostNetwork": True, "nodeName": "n"},
            "status": {"phase": "Running", "podIP": "10.1.1.1"},
        }
    )
    assert (p.namespace, p.name, p.uid, p.resource_version) == ("default", "p", "u1", "42")
    assert (p.host_network, p.node_name, p.pod_ip, p.phase, p.owner_replicaset) == (
        True,
        "n",
        "10.1.1.1",
        "Running",
        None,
    )
    assert Pod.from_k8s({"metadata": {"name": "q"}}).phase is None


def test_capitalised_fields_are_ignored_6_15() -> None:
    e = PodIdentityException.from_k8s({"metadata": {"name": "e"}, "spec": {"PodLabels": {"app": "mic"}}})
    assert e.pod_labels == {} and e.ignored_pod_labels == {"app": "mic"}
    assert e.ignored_fields == ("spec.PodLabels",)
    i = AzureIdentity.from_k8s({"metadata": {"name": "i"}, "spec": {"ClientID": "x", "Type": 0}})
    assert i.client_id == "" and set(i.ignored_fields) == {"spec.ClientID", "spec.Type"}


def test_capitalised_exception_finding() -> None:
    from factories import pod, world  # noqa: PLC0415

    e = PodIdentityException.from_k8s(
        {"metadata": {"name": "old", "namespace": "ns"}, "spec": {"PodLabels": {"app": "x"}}}
    )
    p = pod("p", "ns", {"app": "x"})
    r = world(e, p).evaluate(p)
    assert r.verdict == "intercepted"
    assert "CapitalisedFields" in r.finding_codes


def _cfg(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "nmisim.dev/v1alpha1",
        "kind": "SimulationConfig",
        "metadata": {"name": "default"},
        "spec": spec,
    }


def test_config_defaults_are_nmi_flag_defaults_4() -> None:
    n = SimulationConfig.default().nmi
    assert (n.operation_mode, n.force_namespaced, n.mic_namespace) == ("standard", False, "default")
    assert (n.metadata_header_required, n.block_instance_metadata, n.set_retry_after_header) == (
        True,
        False,
        False,
    )
    assert (
        n.retry_attempts_for_created,
        n.retry_attempts_for_assigned,
        n.find_identity_retry_interval_seconds,
    ) == (16, 4, 5)
    assert SimulationConfig.from_k8s(_cfg({})) == SimulationConfig.default()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"nmi": {"operationMode": "hybrid"}}, "spec.nmi.operationMode: operation mode hybrid not supported"),
        ({"nmi": {"operationMode": "managed"}}, "spec.nmi.forceNamespaced: managed mode not intialized"),
        ({"nmi": {"retryAttemptsForCreated": -1}}, "spec.nmi.retryAttemptsForCreated: must not be negative"),
        (
            {"nmi": {"retryAttemptsForAssigned": -2}},
            "spec.nmi.retryAttemptsForAssigned: must not be negative",
        ),
        ({"nmi": {"forcenamespaced": True}}, "spec.nmi.forcenamespaced: unknown field"),
        ({"nmi": {"forceNamespaced": "yes"}}, "spec.nmi.forceNamespaced: expected a boolean"),
        ({"imds": {"userAssigned": [{}]}}, "spec.imds.userAssigned[0]: needs clientID or resourceID"),
        (
            {"imds": {"nodes": {"n1": {"systemAssigned": 1}}}},
            "spec.imds.nodes.n1.systemAssigned: expected a boolean",
        ),
    ],
)
def test_config_refused_like_nmi(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        SimulationConfig.from_k8s(_cfg(spec))
    assert str(err.value).startswith(message)


def test_config_operation_mode_is_lower_cased_4() -> None:
    cfg = SimulationConfig.from_k8s(_cfg({"nmi": {"operationMode": "Managed", "forceNamespaced": True}}))
    assert cfg.managed


def test_config_wrong_kind_or_version() -> None:
    with pytest.raises(ConfigError, match="apiVersion"):
        SimulationConfig.from_k8s({**_cfg({}), "apiVersion": "v1"})
    with pytest.raises(ConfigError, match="kind"):
        SimulationConfig.from_k8s({**_cfg({}), "kind": "Pod"})


def test_node_override_keeps_unset_fields() -> None:
    cfg = SimulationConfig.from_k8s(
        _cfg(
            {
                "imds": {
                    "systemAssigned": True,
                    "userAssigned": [{"clientID": "c"}],
                    "nodes": {"n2": {"systemAssigned": False}},
                }
            }
        )
    )
    vm = cfg.imds.vm_for("n2")
    assert vm.system_assigned is False and [u.client_id for u in vm.user_assigned] == ["c"]
    assert cfg.imds.vm_for("n1").system_assigned is True


def test_world_set_config_changes_results() -> None:
    from factories import pod, world  # noqa: PLC0415

    p = pod("p", "ns", {})
    w = world(p)
    assert w.evaluate(p).token_request.status == 404
    w.set_config(SimulationConfig.from_k8s(_cfg({"nmi": {"setRetryAfterHeader": True}})))
    assert w.evaluate(p).token_request.status == 503
