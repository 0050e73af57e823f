"""systemd's ``strverscmp_improved``: the order systemd-boot puts versions and entry ids in.

A faithful port (systemd 252, ``src/fundamental/string-util-fundamental.c``), because the
boot order must be predicted exactly: segments are numeric or alphabetic; ``~`` marks the
oldest (pre-releases), ``-`` separates version and release, ``^`` is newer than ``-``, ``.``
is a point release; other characters only separate; numbers compare by value; a longer
string is newer.
"""

from __future__ import annotations

from typing import TypeVar

Comparable = TypeVar("Comparable", int, str)  # bool is an int


def cmp(a: Comparable, b: Comparable) -> int:
    """C's three-way comparison: -1, 0 or 1."""
    return (a > b) - (a < b)


def _valid(char: str) -> bool:
    return char.isascii() and (char.isalnum() or char in "~-^.")


def _digit(char: str) -> bool:
    return "0" <= char <= "9"


def _alpha(char: str) -> bool:
    return "a" <= char <= "z" or "A" <= char <= "Z"


def strverscmp(a: str | None, b: str | None) -> int:
    """-1, 0 or 1 as ``a`` is older than, as new as, or newer than ``b``. None (no value)
    sorts before everything, as a NULL pointer does in systemd."""
    if not a or not b:
        if a is None or b is None:
            return cmp(a is not None, b is not None)
        return cmp(a, b)
    # A NUL sentinel keeps the index arithmetic of the C original.
    s, t, i, j = a + "\0", b + "\0", 0, 0
    while True:
        while s[i] != "\0" and not _valid(s[i]):
            i += 1
        while t[j] != "\0" and not _valid(t[j]):
            j += 1
        if s[i] == "~" or t[j] == "~":
            r = cmp(s[i] != "~", t[j] != "~")
            if r:
                return r
            i, j = i + 1, j + 1
        if s[i] == "\0" or t[j] == "\0":
            return cmp(s[i:-1], t[j:-1])
        for mark in "-^.":
            if s[i] == mark or t[j] == mark:
                r = cmp(s[i] != mark, t[j] != mark)
                if r:
                    return r
                i, j = i + 1, j + 1
        if _digit(s[i]) or _digit(t[j]):
            while s[i] == "0":
                i += 1
            while t[j] == "0":
                j += 1
            ii, jj = i, j
            while _digit(s[ii]):
                ii += 1
            while _digit(t[jj]):
                jj += 1
            r = cmp(ii - i, jj - j) or cmp(s[i:ii], t[j:jj])
            if r:
                return r
        else:
            ii, jj = i, j
            while _alpha(s[ii]):
                ii += 1
            while _alpha(t[jj]):
                jj += 1
            shortest = min(ii - i, jj - j)
            r = cmp(s[i:i + shortest], t[j:j + shortest]) or cmp(ii - i, jj - j)
            if r:
                return r
        i, j = ii, jj
