"""The national trust list ("liste blanche") XML file: parsing, strictly.

Implementation notes
- Namespace `https://listeblanche.mssante.fr/schema`; every domain is the text of a `Nom` element under
  a `Domaine` element, wherever it sits (`//Domaine/Nom`). Elements without the namespace are accepted
  too, as some exports omit it.
- Parsed with defusedxml: no entity expansion, no external entities, no DTD retrieval.
- Fail closed: a file that is not well-formed, names no domain, or holds an entry that is not a valid
  domain name is refused as a whole, and the list in force stays as it was (the last good copy).
"""

from __future__ import annotations

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from directory.addresses import check_domain
from gateway.errors import UsageError

NAMESPACE = "https://listeblanche.mssante.fr/schema"
MAX_BYTES = 16 * 1024 * 1024


def parse_trust_list(data: bytes) -> list[str]:
    """The domains of a trust list file, lower-cased, sorted, without duplicates."""
    if len(data) > MAX_BYTES:
        raise UsageError(f"the trust list is {len(data)} bytes, more than {MAX_BYTES}")
    try:
        root = ElementTree.fromstring(data)
    except DefusedXmlException as exc:
        raise UsageError(f"the trust list uses forbidden XML constructs ({type(exc).__name__})") from None
    except ElementTree.ParseError as exc:
        raise UsageError(f"the trust list is not well-formed XML: {exc}") from None
    domains: set[str] = set()
    n = 0
    for tag in (f"{{{NAMESPACE}}}Domaine", "Domaine"):
        for dom in root.iter(tag):
            for nom in (*dom.findall(f"{{{NAMESPACE}}}Nom"), *dom.findall("Nom")):
                n += 1
                name = (nom.text or "").strip().lower().rstrip(".")
                reason = check_domain(name)
                if reason:
                    raise UsageError(f"trust list entry {n} ({nom.text!r}) is refused: {reason}")
                domains.add(name)
    if not domains:
        raise UsageError(f"the trust list names no domain (no {{{NAMESPACE}}}Domaine/Nom element)")
    return sorted(domains)
