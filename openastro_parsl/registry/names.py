"""The grammar of collection names, checked whenever a collection is created.

Run names become folders (``REPO/<run>/...`` and ``REPO/submit/<run>/...``), so a name must map to exactly
one folder inside the repository and no two names to the same one: ``u//double`` and ``u/double``, or names
differing in ``:`` or accents, would otherwise share files. Names already in a registry are read as they are;
only creating a collection is refused.
"""

from __future__ import annotations

import re

from ..errors import CollectionNameError

MAX_COMPONENT = 100
MAX_TOTAL = 255
# The repository's own entries at its top level; a run named like them would write among them.
RESERVED_FIRST = frozenset({"submit", "quarantine", "butler.yaml", "instruments.yaml", "registry.sqlite3"})
GRAMMAR = (f"collection names are components separated by '/', each 1-{MAX_COMPONENT} letters, digits, '_', '-' "
           f"or '.' (not '.' or '..'), with no leading, trailing or doubled '/', at most {MAX_TOTAL} characters "
           f"in all, and not starting with the repository's own {', '.join(sorted(RESERVED_FIRST))}")
_BAD_CHAR = re.compile(r"[^A-Za-z0-9_.-]")  # outside a component's alphabet


def _show(text: str) -> str:
    return repr(text) if len(text) <= 60 else f"{text[:40]!r}... ({len(text)} characters)"


def _char(ch: str) -> str:
    return f"{ch!r} (U+{ord(ch):04X})" if not ch.isascii() or not ch.isprintable() else repr(ch)


def validate_collection_name(name: object, what: str = "collection") -> str:
    """Return ``name`` if it follows the grammar, else raise CollectionNameError naming what is wrong."""
    if not isinstance(name, str) or not name:
        raise CollectionNameError(f"{what} name {name!r} is empty or not a string; {GRAMMAR}")

    def bad(reason: str) -> CollectionNameError:
        return CollectionNameError(f"{what} name {_show(name)} is not allowed: {reason}; {GRAMMAR}")

    if name.startswith("/") or name.endswith("/"):
        raise bad(f"it {'starts' if name.startswith('/') else 'ends'} with '/'")
    parts = name.split("/")
    for i, part in enumerate(parts, 1):
        where = f"component {i}" + (f" ({_show(part)})" if part else "")
        if not part:
            raise bad(f"component {i} is empty ('//')")
        bad_char = _BAD_CHAR.search(part)
        if bad_char is not None:
            raise bad(f"{where} contains {_char(bad_char.group())}")
        if part in (".", ".."):
            raise bad(f"{where} is {part!r}")
        if len(part) > MAX_COMPONENT:
            raise bad(f"{where} is {len(part)} characters long (at most {MAX_COMPONENT})")
    if len(name) > MAX_TOTAL:
        raise bad(f"it is {len(name)} characters long (at most {MAX_TOTAL})")
    if parts[0] in RESERVED_FIRST:
        raise bad(f"its first component {parts[0]!r} is the repository's own")
    return name
