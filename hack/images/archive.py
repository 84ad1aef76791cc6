#!/usr/bin/env python3
"""Pack files into a one-layer image archive (the `docker save` format, which `ctr images import`
and `docker load` read). Used for the pause image: no image can be pulled on these machines, and the
real node's sandbox image must exist before any builder runs.

    hack/images/archive.py --tag nmisim-pause:dev --entrypoint /pause --file /pause=build/pause OUT.tar
    hack/images/archive.py --tag nmisim-base:dev --cmd /bin/sh --layer rootfs.tar OUT.tar
    hack/images/archive.py --tag kube-proxy:v1 --layer rootfs.tar --file /usr/local/bin/kube-proxy=BIN OUT.tar

Byte-for-byte reproducible: fixed mtimes, owners and order, so the same inputs give the same digest.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path


def _tar_bytes(members: list[tuple[str, bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime, info.uid, info.gid = len(data), mode, 0, 0, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build(  # noqa: PLR0917
    tag: str,
    layers: list[bytes],
    entrypoint: list[str],
    cmd: list[str],
    user: str,
    env: list[str] | None = None,
    stop_signal: str = "",
) -> bytes:
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    image_config: dict[str, object] = {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", *(env or [])]
    }
    if stop_signal:
        image_config["StopSignal"] = stop_signal
    if entrypoint:
        image_config["Entrypoint"] = entrypoint
    if cmd:
        image_config["Cmd"] = cmd
    if user:
        image_config["User"] = user
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": image_config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "hack/images/archive.py"}],
        },
        sort_keys=True,
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    names = [d.removeprefix("sha256:") + "/layer.tar" for d in diff_ids]
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": names}]).encode()
    members = [(config_name, config, 0o644)]
    members += [(name, layer, 0o644) for name, layer in zip(names, layers, strict=True)]
    return _tar_bytes([*members, ("manifest.json", manifest, 0o644)])


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tag", required=True)
    p.add_argument("--entrypoint", action="append", default=[])
    p.add_argument("--cmd", action="append", default=[])
    p.add_argument("--user", default="")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="an environment variable")
    p.add_argument("--stop-signal", default="", help="the image's StopSignal (e.g. SIGRTMIN+3)")
    p.add_argument("--layer", type=Path, help="an existing tar (a root filesystem): the first layer")
    p.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="DEST=SRC",
        help="a file of the (next) layer (repeatable)",
    )
    p.add_argument("out", type=Path)
    a = p.parse_args(argv)
    if not a.layer and not a.file:
        p.error("give --layer, --file or both")
    layers: list[bytes] = []
    if a.layer:
        if not a.layer.is_file():
            p.error(f"--layer {a.layer}: no such file")
        layers.append(a.layer.read_bytes())
    files: list[tuple[str, bytes, int]] = []
    for spec in a.file:
        dest, sep, path = spec.partition("=")
        if not sep or not Path(path).is_file():
            p.error(f"--file {spec!r}: want DEST=SRC with SRC an existing file")
        files.append((dest.lstrip("/"), Path(path).read_bytes(), 0o755))
    if files:
        layers.append(_tar_bytes(sorted(files)))
    tmp = a.out.with_suffix(".tmp")
    tmp.write_bytes(build(a.tag, layers, a.entrypoint, a.cmd, a.user, a.env, a.stop_signal))
    tmp.replace(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
