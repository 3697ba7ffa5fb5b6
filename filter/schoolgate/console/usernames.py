"""Console usernames: ASCII only, and none that reads like another account's.

A record that says "proposed by dsl.jones, approved by dsl.jon\u0435s" reads as one person twice
(adversarial passes a14 and a15 made such accounts: Cyrillic letters, case, separators, look-alike
digits). Names are ASCII letters, digits, '.', '-' and '_', and a new name is refused when its
skeleton equals, or is one character from, an existing account's.
"""

from __future__ import annotations

import re

_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", re.ASCII)


def valid_username(username: str) -> bool:
    """Up to 64 ASCII letters, digits, '.', '-' and '_', starting with a letter or digit."""
    return _USERNAME.fullmatch(username) is not None


# Characters a reader can take for one another in a name on a page ("dsl.jones" approved by
# "DSL.Jones", "dsl_jones" or "dsl.jone5" reads as one person twice: adversarial passes a14,
# a15). Names are ASCII (no Cyrillic look-alikes); no two accounts may share a skeleton, or
# have skeletons one character apart.
_SKELETON = str.maketrans({"0": "o", "1": "l", "i": "l", "|": "l", "5": "s", "2": "z", "8": "b",
                           "6": "b", "9": "g", "q": "g", "4": "a", "3": "e", "7": "t", "c": "o",
                           "v": "y", "u": "y", ".": None, "-": None, "_": None})  # fmt: skip


def skeleton(username: str) -> str:
    """What a username looks like to a hurried reader: case, separators and the usual digit
    and letter confusions (0/o, 1/l/i, 5/s, c/o, v/y, rn/m, vv/w, cl/d) folded away."""
    lowered = username.lower()
    for pair, single in (("rn", "m"), ("vv", "w"), ("cl", "d")):
        lowered = lowered.replace(pair, single)
    return lowered.translate(_SKELETON)


def _one_apart(first: str, second: str) -> bool:
    """Equal, or one substitution, insertion or deletion apart."""
    if abs(len(first) - len(second)) > 1:
        return False
    if len(first) == len(second):
        return sum(a != b for a, b in zip(first, second, strict=True)) <= 1
    short, long = sorted((first, second), key=len)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def reads_like(first: str, second: str) -> bool:
    """Whether two usernames can be taken for one another on a record."""
    a, b = skeleton(first), skeleton(second)
    return a == b or (min(len(a), len(b)) >= 5 and _one_apart(a, b))
