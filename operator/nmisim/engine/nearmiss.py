""" "Did you mean": strings one typo away from each other (selectors, label keys).

NMI and MIC compare a pod's ``aadpodidbinding`` value with a binding's ``spec.selector`` using ``==``, and
read the label under the exact key ``aadpodidbinding`` (nmi-semantics §1), so a typo silently leaves the pod
without an identity. A *near miss* is a pair of different strings, not equal ignoring case (that is
``SelectorCaseMismatch``), whose Damerau-Levenshtein distance (insertions, deletions, substitutions, swaps of
two adjacent characters) is at most 2 -- at most 1 when the shorter string has fewer than 6 characters, and
never for strings shorter than 3 (short selectors are too alike to guess).

Lookups go through a deletion index (each string and every string obtained by deleting one character), so
finding the near misses of one string costs O(its length) index probes, never a scan of all selectors.
Candidates found through the index (one deletion on each side: every single edit, and some double ones) are
then checked with the real distance.
"""

from __future__ import annotations

from collections.abc import Iterable

from nmisim.engine.fold import equal_fold

#: longest string the index keeps deletions of (Kubernetes label values are at most 63 characters)
MAX_LEN = 63


def distance(a: str, b: str) -> int:
    """Damerau-Levenshtein distance (optimal string alignment)."""
    if a == b:
        return 0
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[len(b)]


def limit(a: str, b: str) -> int:
    """The largest distance still counted as a near miss between ``a`` and ``b``."""
    shorter = min(len(a), len(b))
    if shorter < 3:
        return 0
    return 1 if shorter < 6 else 2


def is_near_miss(a: str, b: str) -> bool:
    """``a`` and ``b`` differ by a typo: not equal (even ignoring case), within :func:`limit`."""
    if equal_fold(a, b):
        return False
    lim = limit(a, b)
    return lim > 0 and abs(len(a) - len(b)) <= lim and distance(a, b) <= lim


def _deletes(value: str) -> set[str]:
    out = {value}
    if len(value) <= MAX_LEN:
        out.update(value[:i] + value[i + 1 :] for i in range(len(value)))
    return out


class NearMissIndex:
    """Strings indexed by their one-deletion neighbourhood."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._by_delete: dict[str, set[str]] = {}
        for v in values:
            self.add(v)

    def add(self, value: str) -> None:
        for d in _deletes(value):
            self._by_delete.setdefault(d, set()).add(value)

    def remove(self, value: str) -> None:
        for d in _deletes(value):
            found = self._by_delete.get(d)
            if found is not None:
                found.discard(value)
                if not found:
                    del self._by_delete[d]

    def near(self, value: str) -> list[str]:
        """Indexed strings that are a near miss of ``value`` (:func:`is_near_miss`), sorted."""
        found: set[str] = set()
        for d in _deletes(value):
            found.update(self._by_delete.get(d, ()))
        return sorted(v for v in found if is_near_miss(value, v))
