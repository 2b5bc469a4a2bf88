"""Mailbox address syntax for the trust space.

Implementation notes
- An address is an RFC 5322 dot-atom local part, "@", and a domain of LDH labels (RFC 5321 §4.1.2,
  RFC 1035 §2.3.1): no quoted local parts, no address literals, no source routes.
- `%` and `!` are refused in local parts: they are routing syntax that relays have honoured (RFC 1123
  §5.2.16), and an address that means "forward elsewhere" has no place in a closed trust space.
- Size limits: local part 64 octets, domain 253, whole address 254 (RFC 5321 §4.5.3.1, the path's 256
  minus the angle brackets).
- Addresses compare case-insensitively in the trust space; `normalise` lower-cases them.
"""

from __future__ import annotations

import re

from directory.identifiers import check_ins

_LOCAL = re.compile(r"[A-Za-z0-9#$&'*+/=?^_`{}~-]+(?:\.[A-Za-z0-9#$&'*+/=?^_`{}~-]+)*\Z")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")


def check_domain(domain: str) -> str | None:
    """None if `domain` is a valid mail domain, else the reason."""
    if not domain:
        return "the domain is empty"
    if len(domain) > 253:
        return f"the domain is {len(domain)} characters long, more than 253"
    labels = domain.split(".")
    if len(labels) < 2:
        return f"the domain {domain!r} has a single label"
    for label in labels:
        if not _LABEL.match(label):
            return f"the domain label {label!r} is not letters, digits and inner hyphens (1 to 63)"
    if labels[-1].isdigit():
        return f"the domain {domain!r} ends in a numeric label"
    return None


def check_address(address: str) -> str | None:
    """None if `address` is a valid trust-space mailbox address, else the reason."""
    if len(address) > 254:
        return f"the address is {len(address)} characters long, more than 254"
    local, at, domain = address.rpartition("@")
    if not at:
        return "the address has no '@'"
    if not local:
        return "the local part is empty"
    if len(local.encode()) > 64:
        return f"the local part is {len(local.encode())} octets long, more than 64"
    if "@" in local or '"' in local:
        return "quoted local parts are not accepted"
    if "%" in local or "!" in local:
        return "'%' and '!' (source routing) are not accepted in the local part"
    if not _LOCAL.match(local):
        return f"the local part {local!r} is not a dot-atom"
    return check_domain(domain)


def normalise(address: str) -> str:
    return address.strip().lower()


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def patient_address(ins: str, patient_domain: str) -> str:
    """`<INS>@<patient domain>` (domain brief §2): the INS must already be validated (15 characters)."""
    return f"{ins}@{patient_domain}".lower()


def is_patient_address(address: str) -> bool:
    """A patient mailbox of any operator: a valid INS (key checked) at a domain whose first label is `patient`."""
    local, at, domain = address.strip().rpartition("@")
    return bool(at) and domain.lower().startswith("patient.") and len(local) == 15 and check_ins(local.upper()) is None
