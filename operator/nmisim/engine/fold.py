"""Go's ``strings.EqualFold`` for Python (used by exception matching, the MIC shortcut, owner kinds)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=4096)
def _fold_char(c: str) -> str:
    # Smallest member of the character's simple case orbit, built from Python's single-character case
    # mappings: close to Go's unicode.SimpleFold orbits
    # (e.g. long s U+017F, 's', 'S'; Kelvin sign U+212A, 'k', 'K').
    orbit = {c}
    todo = [c]
    while todo:
        x = todo.pop()
        for y in (x.lower(), x.upper(), x.casefold()):
            if len(y) == 1 and y not in orbit:
                orbit.add(y)
                todo.append(y)
    return min(orbit)


def fold(value: str) -> str:
    """A key such that ``fold(a) == fold(b)`` iff ``strings.EqualFold(a, b)`` (exact for ASCII, which is
    all Kubernetes allows in label values; a close approximation beyond)."""
    if value.isascii():
        return value.upper()  # the smallest member of an ASCII letter's orbit is its upper case
    return "".join(_fold_char(c) for c in value)


def equal_fold(a: str, b: str) -> bool:
    """Go ``strings.EqualFold``."""
    return a == b or fold(a) == fold(b)
