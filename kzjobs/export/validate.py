"""Check the XML formats offline: ALTO and PAGE against their official XSDs, TEI
against the TEI Consortium's ``tei_all`` RELAX NG schema (all kept in ``schemas/``,
imports resolved to the local copies, never fetched), and TEI's pointers, which no
schema checks: ids unique and every ``facs`` pointer resolving to one.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from lxml import etree

SCHEMAS = Path(__file__).with_name("schemas")
XSD = {"alto": "alto-4-4.xsd", "page": "pagecontent-2019-07-15.xsd"}
TEI_RNG = "tei_all-4.3.0.rng"
# Imports the schemas make by URL, and their local copies.
LOCAL = {"http://www.loc.gov/standards/xlink/xlink.xsd": SCHEMAS / "xlink.xsd"}
TEI = "{http://www.tei-c.org/ns/1.0}"
XML_ID = "{http://www.w3.org/XML/1998/namespace}id"


class InvalidDocument(ValueError):
    """A written file breaks its format's rules; the message lists each break."""


class _LocalCopies(etree.Resolver):
    def resolve(self, url: str, pubid: str | None, context: object) -> object:
        if url in LOCAL:
            return self.resolve_filename(str(LOCAL[url]), context)
        return None  # no_network below: anything else fails instead of being fetched


@cache
def schema(kind: str) -> etree.XMLSchema:
    """The XSD of ``kind`` ("alto" or "page"), loaded once."""
    parser = etree.XMLParser(no_network=True)
    parser.resolvers.add(_LocalCopies())
    return etree.XMLSchema(etree.parse(str(SCHEMAS / XSD[kind]), parser))


def check_xsd(kind: str, data: bytes) -> None:
    """Raise InvalidDocument unless ``data`` is valid against the ``kind`` schema."""
    xsd = schema(kind)
    doc = etree.fromstring(data, etree.XMLParser(no_network=True, resolve_entities=False))
    if not xsd.validate(doc):
        errors = [f"line {e.line}: {e.message}" for e in xsd.error_log]
        raise InvalidDocument(f"{kind}: " + "; ".join(errors[:20]))


@cache
def tei_schema() -> etree.RelaxNG:
    """TEI P5 ``tei_all`` (a 1 MB grammar: compiled once, in seconds)."""
    return etree.RelaxNG(etree.parse(str(SCHEMAS / TEI_RNG),
                                     etree.XMLParser(no_network=True)))


def check_tei(data: bytes) -> None:
    """Raise InvalidDocument unless ``data`` is valid TEI P5 with resolving pointers."""
    problems = tei_problems(data)
    if not problems:
        rng = tei_schema()
        if not rng.validate(etree.fromstring(data, etree.XMLParser(no_network=True))):
            problems = [f"line {e.line}: {e.message}" for e in rng.error_log]
    if problems:
        raise InvalidDocument("tei: " + "; ".join(problems[:20]))


def tei_problems(data: bytes) -> list[str]:
    """What breaks the checked TEI rules in ``data`` (empty: none)."""
    # collect_ids off: a repeated xml:id is then one of the problems listed, not a
    # parse error that hides the others.
    parser = etree.XMLParser(no_network=True, resolve_entities=False, collect_ids=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        return [f"not well-formed: {exc}"]
    problems = []
    if root.tag != f"{TEI}TEI":
        problems.append(f"root is {root.tag}, not TEI in the TEI namespace")
    for path in ("teiHeader/fileDesc/titleStmt/title", "teiHeader/fileDesc/publicationStmt",
                 "teiHeader/fileDesc/sourceDesc", "text"):
        if root.find("/".join(f"{TEI}{p}" for p in path.split("/"))) is None:
            problems.append(f"missing {path}")
    ids: dict[str, int] = {}
    for element in root.iter():
        if (value := element.get(XML_ID)) is not None:
            ids[value] = ids.get(value, 0) + 1
    problems += [f"xml:id {i!r} used {n} times" for i, n in ids.items() if n > 1]
    for element in root.iter():
        for ref in (element.get("facs") or "").split():
            if not ref.startswith("#") or ref[1:] not in ids:
                problems.append(f"{etree.QName(element).localname} facs={ref!r} points at "
                                "no xml:id")
    return problems
