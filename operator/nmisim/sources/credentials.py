"""Credentials from a library, not from nmisim's own code: the kubernetes client's config loaders.

They understand everything a kubeconfig can say (contexts, client certificates, ``token`` and ``tokenFile``,
exec plugins, auth providers) and the in-cluster service account, whose projected token the kubelet
rotates and the loader re-reads (its ``refresh_api_key_hook``). :class:`ClientCredentials` is the
:class:`nmisim.kube.client.Credentials` the operator and the node agent give their one
:class:`nmisim.kube.client.APIClient`; :meth:`ClientCredentials.refresh`, called on a 401, runs the loaders
again, so a kubeconfig's rewritten token file or a rotated token is read without a restart.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Mapping
from typing import Any

from nmisim.sources.cluster import Target, api_client
from nmisim.sources.files import ClusterError

log = logging.getLogger(__name__)


def _ssl_context(cfg: Any) -> ssl.SSLContext | bool:
    if not cfg.verify_ssl:
        return False
    ctx = (
        ssl.create_default_context(cafile=cfg.ssl_ca_cert)
        if cfg.ssl_ca_cert
        else ssl.create_default_context()
    )
    if cfg.cert_file and cfg.key_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    return ctx


def _header_auth(cfg: Any) -> dict[str, str]:
    """The client's own auth settings as headers: the in-cluster loader keys the token "BearerToken", a
    kubeconfig's is "authorization"; both are header fields."""
    hook = getattr(cfg, "refresh_api_key_hook", None)
    if hook is not None:
        hook(cfg)  # the in-cluster loader re-reads the token file when its copy is older than a minute
    return {
        str(setting["key"]).title(): str(setting["value"])
        for setting in cfg.auth_settings().values()
        if setting.get("in") == "header" and setting.get("value")
    }


class ClientCredentials:
    """The credentials of a kubeconfig context or of the in-cluster service account."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        cfg = api_client(self.target).configuration  # ClusterError for a missing or bad kubeconfig
        server = str(cfg.host).rstrip("/")
        context = _ssl_context(cfg)
        with self._lock:
            self._cfg = cfg
            self._server = server
            self._ssl = context

    @property
    def server(self) -> str:
        return self._server

    @property
    def ssl(self) -> ssl.SSLContext | bool:
        return self._ssl

    def headers(self) -> Mapping[str, str]:
        with self._lock:
            return _header_auth(self._cfg)

    def refresh(self) -> bool:
        """Run the loaders again (after a 401); whether the auth headers changed. The server and TLS stay
        those of the first load (one session)."""
        before = dict(self.headers())
        try:
            cfg = api_client(self.target).configuration
        except ClusterError as exc:
            log.warning("reading the credentials again failed: %s", exc)
            return False
        with self._lock:
            self._cfg = cfg
        return dict(self.headers()) != before
