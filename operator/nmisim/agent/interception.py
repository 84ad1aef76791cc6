"""NMI's interception (``pkg/nmi/iptables/iptables.go``, ``server.go`` ``updateIPTableRules``; §3).

Table ``nat``, chain ``aad-metadata``, jumped to from ``PREROUTING`` (inserted at position 1 when
missing); its contents, exactly as ``iptables -t nat -S aad-metadata`` prints them (one line each)::

    -N aad-metadata
    -A aad-metadata ! -s 127.0.0.1/32 -d 169.254.169.254/32 -p tcp -m tcp --dport 80
       -j DNAT --to-destination 127.0.0.1:2579
    -A aad-metadata -j RETURN

Every ``--ipt-update-interval-sec`` the chain is listed; when it differs NMI logs ``flushing iptables to
add aad-metadata custom chains``, flushes and rewrites it. The DNAT target is always ``127.0.0.1``. On
shutdown the jump is deleted and the chain flushed and deleted. Any iptables error is fatal to NMI.

Only PREROUTING is touched: pods' packets pass it, hostNetwork pods' and host processes' (OUTPUT) do
not, which is why NMI never sees them.

DNAT to 127.0.0.1 from PREROUTING needs ``route_localnet=1`` on the interface the packets arrive on (or
``all``), else the kernel drops them as martians. NMI never sets it (it relies on the node: kube-proxy or,
on nmisim's real node, ``hack/node.sh`` on the pod bridge); :class:`RouteLocalnet` sets it on the
interfaces asked for (none by default, as NMI) and puts the old values back on exit.

The commands run through an injectable prefix (``("ip", "netns", "exec", NAME)``) so tests can point the
manager at a network namespace of their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

log = logging.getLogger("nmisim.agent.interception")

CHAIN: Final = "aad-metadata"
TABLE: Final = "nat"
TARGET_IP: Final = "127.0.0.1"
#: seconds iptables waits for the xtables lock (``-w``)
LOCK_WAIT: Final = "5"


class IptablesError(RuntimeError):
    """An iptables command failed (fatal for NMI)."""


@dataclass(frozen=True, slots=True)
class CommandResult:
    code: int
    stdout: str
    stderr: str


class Runner(Protocol):
    async def __call__(self, argv: Sequence[str]) -> CommandResult: ...


async def run_command(argv: Sequence[str]) -> CommandResult:
    """Run a command without blocking the event loop."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
    except OSError as exc:
        return CommandResult(127, "", f"{argv[0]}: {exc.strerror or exc}")
    out, err = await proc.communicate()
    return CommandResult(proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))


@dataclass(frozen=True, slots=True)
class Rules:
    """What NMI installs for its flags: ``--metadata-ip``, ``--metadata-port``, ``--nmi-port``."""

    metadata_ip: str = "169.254.169.254"
    metadata_port: int = 80
    nmi_port: int = 2579

    def expected(self) -> list[str]:
        """``iptables -t nat -S aad-metadata`` when the chain is right (``ensureCustomChain``)."""
        return [
            f"-N {CHAIN}",
            f"-A {CHAIN} ! -s 127.0.0.1/32 -d {self.metadata_ip}/32 -p tcp -m tcp --dport "
            f"{self.metadata_port} -j DNAT --to-destination {TARGET_IP}:{self.nmi_port}",
            f"-A {CHAIN} -j RETURN",
        ]

    def dnat(self) -> list[str]:
        return [
            "-p", "tcp", "-d", self.metadata_ip, "--dport", str(self.metadata_port),
            "!", "-s", "127.0.0.1", "-j", "DNAT", "--to-destination", f"{TARGET_IP}:{self.nmi_port}",
        ]  # fmt: skip


class Iptables:
    """``iptables`` (or a prefix such as ``ip netns exec NAME iptables``) on the nat table."""

    def __init__(self, argv: Sequence[str] = ("iptables",), runner: Runner = run_command) -> None:
        self.argv = tuple(argv)
        self.runner = runner

    async def run(self, *args: str, check: bool = True) -> CommandResult:
        res = await self.runner([*self.argv, "-w", LOCK_WAIT, "-t", TABLE, *args])
        if check and res.code != 0:
            raise IptablesError(f"iptables -t {TABLE} {' '.join(args)}: {res.stderr.strip() or res.code}")
        return res

    async def list_chain(self, chain: str) -> list[str] | None:
        """The chain's ``-S`` lines, or None when it does not exist."""
        res = await self.run("-S", chain, check=False)
        if res.code != 0:
            return None
        return [ln for ln in res.stdout.splitlines() if ln.strip()]

    async def exists(self, chain: str, *rule: str) -> bool:
        return (await self.run("-C", chain, *rule, check=False)).code == 0


class RuleManager:
    """Installs, checks and repairs, and removes NMI's rules."""

    def __init__(self, iptables: Iptables, rules: Rules) -> None:
        self.ipt = iptables
        self.rules = rules
        self.repairs = 0
        self.synced = False

    async def sync(self) -> bool:
        """One ``updateIPTableRules`` pass; True when something had to be (re)written."""
        changed = False
        current = await self.ipt.list_chain(CHAIN)
        if current is None:
            await self.ipt.run("-N", CHAIN)
            current = [f"-N {CHAIN}"]
        if current != self.rules.expected():
            log.warning("flushing iptables to add %s custom chains", CHAIN)
            await self.ipt.run("-F", CHAIN)
            await self.ipt.run("-A", CHAIN, *self.rules.dnat())
            await self.ipt.run("-A", CHAIN, "-j", "RETURN")
            changed = True
        if not await self.ipt.exists("PREROUTING", "-j", CHAIN):
            await self.ipt.run("-I", "PREROUTING", "1", "-j", CHAIN)
            changed = True
        if changed:
            self.repairs += 1 if self.synced else 0
        self.synced = True
        return changed

    async def cleanup(self) -> bool:
        """``DeleteCustomChain``: jump, contents, chain; True when every step worked."""
        ok = True
        while await self.ipt.exists("PREROUTING", "-j", CHAIN):
            res = await self.ipt.run("-D", "PREROUTING", "-j", CHAIN, check=False)
            if res.code != 0:
                log.error("deleting the PREROUTING jump to %s: %s", CHAIN, res.stderr.strip())
                ok = False
                break
        if await self.ipt.list_chain(CHAIN) is not None:
            for args in (("-F", CHAIN), ("-X", CHAIN)):
                res = await self.ipt.run(*args, check=False)
                if res.code != 0:
                    log.error("iptables -t nat %s: %s", " ".join(args), res.stderr.strip())
                    ok = False
        return ok


class Sysctl(Protocol):
    async def read(self, key: str) -> str: ...

    async def write(self, key: str, value: str) -> None: ...


class ProcSysctl:
    """Sysctls through ``/proc/sys`` of the agent's own network namespace."""

    def __init__(self, root: Path = Path("/proc/sys")) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("."))

    async def read(self, key: str) -> str:
        return self._path(key).read_text().strip()

    async def write(self, key: str, value: str) -> None:
        self._path(key).write_text(value + "\n")


class CommandSysctl:
    """Sysctls through ``sysctl`` behind a prefix (``ip netns exec NAME``)."""

    def __init__(self, prefix: Sequence[str] = (), runner: Runner = run_command) -> None:
        self.prefix = tuple(prefix)
        self.runner = runner

    async def read(self, key: str) -> str:
        res = await self.runner([*self.prefix, "sysctl", "-n", key])
        if res.code != 0:
            raise OSError(res.stderr.strip())
        return res.stdout.strip()

    async def write(self, key: str, value: str) -> None:
        res = await self.runner([*self.prefix, "sysctl", "-qw", f"{key}={value}"])
        if res.code != 0:
            raise OSError(res.stderr.strip())


class RouteLocalnet:
    """``net.ipv4.conf.<iface>.route_localnet=1`` on each interface asked for, restored on exit."""

    def __init__(self, interfaces: Sequence[str], sysctl: Sysctl | None = None) -> None:
        self.interfaces = tuple(interfaces)
        self.sysctl: Sysctl = sysctl if sysctl is not None else ProcSysctl()
        self.saved: dict[str, str] = {}

    @staticmethod
    def key(interface: str) -> str:
        return f"net.ipv4.conf.{interface}.route_localnet"

    async def enable(self) -> None:
        for iface in self.interfaces:
            key = self.key(iface)
            old = await self.sysctl.read(key)
            if iface not in self.saved:
                self.saved[iface] = old
            if old != "1":
                await self.sysctl.write(key, "1")
                log.info("set %s=1 (was %s)", key, old)

    async def restore(self) -> bool:
        ok = True
        for iface, old in list(self.saved.items()):
            try:
                if await self.sysctl.read(self.key(iface)) != old:
                    await self.sysctl.write(self.key(iface), old)
                del self.saved[iface]
            except OSError as exc:
                log.error("restoring %s=%s: %s", self.key(iface), old, exc)
                ok = False
        return ok


class Conntrack:
    """``--enable-conntrack-deletion``: after the first install, drop conntrack entries for TCP to the
    metadata address and port so connections opened before NMI go through the new rules."""

    def __init__(self, prefix: Sequence[str] = (), runner: Runner = run_command) -> None:
        self.prefix = tuple(prefix)
        self.runner = runner

    async def delete(self, rules: Rules) -> None:
        argv = [*self.prefix, "conntrack", "-D", "-p", "tcp", "--orig-dst", rules.metadata_ip]
        res = await self.runner([*argv, "--orig-port-dst", str(rules.metadata_port)])
        if res.code == 127:
            log.warning("--enable-conntrack-deletion: %s", res.stderr.strip())
        else:
            log.info("conntrack entries for %s:%d deleted", rules.metadata_ip, rules.metadata_port)
