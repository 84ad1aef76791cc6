"""AzurePodIdentityException matching (nmi-semantics §1 "AzurePodIdentityException", §2 step 5-6).

The rule, as NMI applies it to the calling pod:

* only exceptions in the pod's **own namespace** count (no cluster-wide exception);
* an exception matches when **any one** key of its ``spec.podLabels`` is on the pod (OR);
* keys compare exactly, values case-insensitively (Go ``strings.EqualFold``);
* an exception with empty ``podLabels`` matches nothing.

:class:`ExceptionIndex` answers "which exceptions match this pod" in O(number of pod labels) through a
per-namespace map keyed by ``(key, folded value)``; :func:`is_pod_excepted` is the direct transcription of
NMI's loop, used as the oracle in tests and by the naive benchmark.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from nmisim.engine.fold import equal_fold, fold
from nmisim.engine.models import PodIdentityException


def exception_matches(pod_labels: Mapping[str, str], exc: PodIdentityException) -> bool:
    """One exception against one pod's labels: any key present with an EqualFold value."""
    for key, value in exc.pod_labels.items():
        have = pod_labels.get(key)
        if have is not None and equal_fold(have, value):
            return True
    return False


def is_pod_excepted(pod_labels: Mapping[str, str], exceptions: Iterable[PodIdentityException]) -> bool:
    """Direct transcription of NMI's ``IsPodExcepted``: loop over the namespace's exceptions."""
    return any(exception_matches(pod_labels, exc) for exc in exceptions)


class ExceptionIndex:
    """Exceptions of all namespaces, indexed per namespace by ``(label key, folded value)``.

    ``match(namespace, labels)`` costs one dict lookup per pod label, independent of how many exceptions
    exist. The same structure also indexes the *ignored* pre-1.6 ``PodLabels`` (``ignored=True``) so that
    the engine can point out exceptions that would have matched with correct casing.
    """

    def __init__(self, *, ignored: bool = False) -> None:
        self._ignored = ignored
        self._by_ns: dict[str, dict[tuple[str, str], set[str]]] = {}
        self._labels: dict[tuple[str, str], dict[str, str]] = {}

    def _labels_of(self, exc: PodIdentityException) -> dict[str, str]:
        return exc.ignored_pod_labels if self._ignored else exc.pod_labels

    def add(self, exc: PodIdentityException) -> None:
        self.remove(exc.namespace, exc.name)
        labels = self._labels_of(exc)
        if not labels:
            return
        self._labels[(exc.namespace, exc.name)] = dict(labels)
        idx = self._by_ns.setdefault(exc.namespace, {})
        for key, value in labels.items():
            idx.setdefault((key, fold(value)), set()).add(exc.name)

    def remove(self, namespace: str, name: str) -> None:
        labels = self._labels.pop((namespace, name), None)
        if labels is None:
            return
        idx = self._by_ns[namespace]
        for key, value in labels.items():
            k = (key, fold(value))
            names = idx.get(k)
            if names is not None:
                names.discard(name)
                if not names:
                    del idx[k]
        if not idx:
            del self._by_ns[namespace]

    def match(self, namespace: str, labels: Mapping[str, str]) -> list[str]:
        """Names of the exceptions in ``namespace`` that match a pod with ``labels``, sorted."""
        idx = self._by_ns.get(namespace)
        if not idx or not labels:
            return []
        found: set[str] = set()
        for key, value in labels.items():
            names = idx.get((key, fold(value)))
            if names:
                found |= names
        return sorted(found)
