"""Library formats written from the recognised pages: ALTO, PAGE XML, TEI, IIIF
annotations and searchable PDF (one module each; :mod:`kzjobs.export.write` runs them
at merge time).

This module stays light (no lxml, no PDF library): the CLI and the DAG's plan import it
to check a ``--formats`` value.
"""

from __future__ import annotations

from collections.abc import Iterable

# In the order they are written; the PDF last, as it re-reads every page image.
FORMATS: tuple[str, ...] = ("alto", "page", "tei", "iiif", "pdf")


def parse_formats(value: str | Iterable[str] | None) -> list[str]:
    """``"alto,page"`` (or a list, or ``"all"``) as known format names, in FORMATS order.

    An unknown name is an error that lists the known ones: a typo must not silently
    write nothing.
    """
    if value is None:
        return []
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [n.strip().lower() for n in names if n and n.strip()]
    if "all" in names:
        return list(FORMATS)
    unknown = sorted(set(names) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown format(s) {', '.join(unknown)}: use any of "
                         f"{', '.join(FORMATS)} or all")
    return [f for f in FORMATS if f in names]
