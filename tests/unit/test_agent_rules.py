"""NMI's rule manager with an injected iptables (no root): what it runs, in NMI's order; the serve
command's flags (Go syntax) and which SimulationConfig fields they override."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from nmisim.agent.command import overrides_of
from nmisim.agent.interception import CommandResult, Iptables, RouteLocalnet, RuleManager, Rules
from nmisim.cli.main import build_parser


class FakeIptables:
    """A nat table in memory that answers -S/-C/-N/-F/-A/-I/-D/-X as iptables-nft does."""

    def __init__(self) -> None:
        self.chains: dict[str, list[str]] = {"PREROUTING": []}
        self.calls: list[list[str]] = []

    async def __call__(self, argv: Sequence[str]) -> CommandResult:
        args = list(argv)
        assert args[:5] == ["iptables", "-w", "5", "-t", "nat"], args
        op, chain, *rule = args[5:]
        self.calls.append([op, chain, *rule])
        spec = " ".join(rule)
        if op == "-S":
            if chain not in self.chains:
                return CommandResult(1, "", f"iptables: chain `{chain}' does not exist")
            return CommandResult(0, "\n".join([f"-N {chain}", *self.chains[chain]]) + "\n", "")
        if op in {"-N", "-F"}:
            self.chains[chain] = []
        elif op == "-X":
            del self.chains[chain]
        elif op == "-A":
            self.chains[chain].append(f"-A {chain} {_canonical(spec)}")
        elif op == "-I":
            self.chains[chain].insert(int(rule[0]) - 1, f"-A {chain} {' '.join(rule[1:])}")
        elif op in ("-C", "-D"):
            line = f"-A {chain} {spec}"
            if line not in self.chains.get(chain, []):
                return CommandResult(1, "", "Bad rule")
            if op == "-D":
                self.chains[chain].remove(line)
        return CommandResult(0, "", "")


def _canonical(spec: str) -> str:
    rules = Rules()
    if spec == " ".join(rules.dnat()):
        return rules.expected()[1].split(" ", 2)[2]
    return spec


def test_sync_installs_nmi_rules_then_only_repairs() -> None:
    fake = FakeIptables()
    mgr = RuleManager(Iptables(runner=fake), Rules())
    assert asyncio.run(mgr.sync()) is True
    assert ["-N aad-metadata", *fake.chains["aad-metadata"]] == Rules().expected()
    assert fake.chains["PREROUTING"] == ["-A PREROUTING -j aad-metadata"]
    assert ["-I", "PREROUTING", "1", "-j", "aad-metadata"] in fake.calls
    fake.calls.clear()
    assert asyncio.run(mgr.sync()) is False  # nothing to do: only -S and -C
    assert {c[0] for c in fake.calls} == {"-S", "-C"}
    fake.chains["aad-metadata"].append("-A aad-metadata -j ACCEPT")  # drift: flushed and rewritten
    assert asyncio.run(mgr.sync()) is True and mgr.repairs == 1
    assert ["-F", "aad-metadata"] in fake.calls
    assert asyncio.run(mgr.cleanup()) is True
    assert "aad-metadata" not in fake.chains and fake.chains["PREROUTING"] == []


class FakeSysctl:
    def __init__(self) -> None:
        self.values = {"net.ipv4.conf.br0.route_localnet": "0"}

    async def read(self, key: str) -> str:
        return self.values[key]

    async def write(self, key: str, value: str) -> None:
        self.values[key] = value


def test_route_localnet_set_and_restored() -> None:
    sysctl = FakeSysctl()
    rl = RouteLocalnet(["br0"], sysctl)
    asyncio.run(rl.enable())
    assert sysctl.values["net.ipv4.conf.br0.route_localnet"] == "1"
    assert asyncio.run(rl.restore()) is True
    assert sysctl.values["net.ipv4.conf.br0.route_localnet"] == "0"


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        ([], {}),
        (["--metadata-header-required=false"], {"metadata_header_required": False}),
        (["--block-instance-metadata"], {"block_instance_metadata": True}),
        (
            ["--forceNamespaced=true", "--operation-mode", "MANAGED"],
            {"force_namespaced": True, "operation_mode": "managed"},
        ),
        (
            [
                "--retry-attempts-for-created=1",
                "--retry-attempts-for-assigned",
                "0",
                "--find-identity-retry-interval=1",
            ],
            {
                "retry_attempts_for_created": 1,
                "retry_attempts_for_assigned": 0,
                "find_identity_retry_interval_seconds": 1,
            },
        ),
        (
            ["--set-retry-after-header", "--MICNamespace=kube-system"],
            {"set_retry_after_header": True, "mic_namespace": "kube-system"},
        ),
    ],
)
def test_serve_flags_override_config_fields(
    argv: list[str], want: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FORCENAMESPACED", raising=False)
    args = build_parser().parse_args(["serve", "--node", "n", *argv])
    assert overrides_of(args) == want


def test_serve_defaults_are_nmis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "from-env")
    monkeypatch.setenv("FORCENAMESPACED", "true")
    args = build_parser().parse_args(["serve"])
    assert (args.node, args.nmi_listen_address, args.nmi_port, args.ipt_update_interval_sec) == (
        "from-env", "127.0.0.1", 2579, 60,
    )  # fmt: skip
    assert (args.http_probe_port, args.prometheus_port, args.metadata_ip, args.metadata_port) == (
        8080, 9090, "169.254.169.254", 80,
    )  # fmt: skip
    assert overrides_of(args) == {"force_namespaced": True}
    assert args.route_localnet == [] and args.enableScaleFeatures is True
