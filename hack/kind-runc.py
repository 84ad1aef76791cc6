#!/usr/bin/env python3
"""runc for kind's dockerd on these machines: a container's capabilities cut to this host's bounding set.

kind runs every node ``--privileged``, for which Docker 20.10 asks runc for every capability the kernel
knows. These machines' bounding set lacks ``CAP_SYS_RESOURCE`` (no process here can hold it), and runc
then refuses to start the container (``unable to apply caps: operation not permitted``). hack/kind.sh
registers this script as its dockerd's default runtime: before runc creates a container, the capabilities
the host cannot grant are dropped from the bundle's ``config.json``, every other argument goes to runc
unchanged. What a node then holds is what any process here can hold.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

#: Linux capability numbers, 0 upward (linux/capability.h)
CAPABILITIES = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
]


def bounding_set(status: str) -> set[str]:
    """The capability names in ``CapBnd`` of a /proc/PID/status text."""
    for line in status.splitlines():
        if line.startswith("CapBnd:"):
            mask = int(line.split()[1], 16)
            return {f"CAP_{name}" for i, name in enumerate(CAPABILITIES) if mask >> i & 1}
    raise ValueError("no CapBnd line")


def bounded(process: object, allowed: set[str]) -> bool:
    """Drop from an OCI process's capability sets what ``allowed`` lacks; whether anything was dropped."""
    caps = process.get("capabilities") if isinstance(process, dict) else None
    if not isinstance(caps, dict):
        return False
    changed = False
    for key, values in caps.items():
        if isinstance(values, list):
            kept = [v for v in values if v in allowed]
            changed |= kept != values
            caps[key] = kept
    return changed


def option(args: list[str], long: str, short: str) -> str | None:
    for i, arg in enumerate(args):
        if arg in {long, short} and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(long + "="):
            return arg.split("=", 1)[1]
    return None


def spec_of(args: list[str]) -> tuple[Path, bool] | None:
    """The JSON runc reads the process from: the bundle's ``config.json`` for ``create``/``run`` (the
    process under ``process``), the ``--process`` file for ``exec`` (the process itself)."""
    verbs = set(args)
    if verbs & {"create", "run"}:
        return Path(option(args, "--bundle", "-b") or Path.cwd()) / "config.json", True
    if "exec" in verbs:
        file = option(args, "--process", "-p")
        return (Path(file), False) if file else None
    return None


def main(args: list[str]) -> int:
    runc = os.environ.get("NMISIM_RUNC") or shutil.which("runc") or "/usr/sbin/runc"
    found = spec_of(args)
    if found is not None and found[0].is_file():
        path, nested = found
        spec = json.loads(path.read_text())
        process = spec.get("process") if nested else spec
        if bounded(process, bounding_set(Path("/proc/self/status").read_text())):
            path.write_text(json.dumps(spec))
    os.execv(runc, [runc, *args])
    return 127  # pragma: no cover - execv does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
