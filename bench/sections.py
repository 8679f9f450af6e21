"""Sections of docs/performance.md that other runs write, between markers of their own.

``make bench`` rewrites the document but keeps these, since it does not measure them:
the cluster suite's (``cluster-figures``), the chaos soak's (``chaos-figures``) and the
durability benchmark's (``durability-figures``). Each is delimited by
``<!-- NAME-figures:begin ... -->`` and ``<!-- NAME-figures:end -->``.
"""

from __future__ import annotations

import re
from pathlib import Path

_SECTION = re.compile(
    r"<!-- (?P<name>[a-z]+)-figures:begin.*?-->.*?<!-- (?P=name)-figures:end -->", re.DOTALL
)


def kept(doc: Path) -> str:
    """Every marked section of ``doc``, in order, to append to a rewritten document."""
    old = doc.read_text() if doc.is_file() else ""
    return "".join("\n" + m.group(0) + "\n" for m in _SECTION.finditer(old))


def replace(doc: Path, name: str, text: str) -> None:
    """Put ``text`` (a whole section, markers included) in place of section ``name``, or
    at the end of ``doc`` if it has none yet."""
    old = doc.read_text()
    pattern = re.compile(
        rf"<!-- {name}-figures:begin.*?-->.*?<!-- {name}-figures:end -->", re.DOTALL
    )
    if pattern.search(old):
        new = pattern.sub(lambda _: text.strip("\n"), old, count=1)
    else:
        new = old.rstrip("\n") + "\n\n" + text.strip("\n") + "\n"
    doc.write_text(new)
