"""Implementation notes: envelope address syntax, recipients on submission and relay, relay senders (pure policy).

Every function is a pure function of the facts it is given and returns a `Verdict` (no I/O, no audit calls);
refusals carry `AuditEvent.SMTP_RECIPIENT_REFUSED` (recipients) or `AuditEvent.SMTP_SENDER_REFUSED` (relay senders).

Syntax (`address_problem`, `check_recipient_syntax`), checked in this order, each with its own reason:
- Empty path -> "empty recipient address" (RFC 5321 §4.1.1.3: RCPT TO needs a forward-path). `<Postmaster>` without a
  domain is refused too: in a closed trust space the postmaster is written to with its domain.
- Source routes (`@a,@b:user@c`, the A-d-l of RFC 5321 §4.1.2) are refused, not stripped: RFC 5321 §3.6.1 and
  Appendix C deprecate them, and honouring or silently dropping a route is how open relays were built.
- No "@"; address literals (`user@[127.0.0.1]`, RFC 5321 §4.1.3) are refused: trust-space mail goes to domains.
- Quoted local parts (`"user@other"@local`, RFC 5321 §4.1.2 Quoted-string) and a bare "@" in the local part are
  refused: only dot-atoms are trust-space addresses.
- "%" (percent hack) and "!" (UUCP bang path) in the local part are refused with their own reason: they are routing
  syntax that relays honoured (RFC 1123 §5.2.16).
- Size limits of RFC 5321 §4.5.3.1: local part 64 octets (§4.5.3.1.1); domain 253 octets (§4.5.3.1.2 allows 255,
  but a DNS name is at most 253 characters in text form); whole address 254 (§4.5.3.1.3: a path is 256 octets
  including the angle brackets). Checked before the character rules so that an oversized part gets the precise reason.
- A trailing dot (`user@local.`) is refused, not normalised: RFC 5321 §4.1.2 `Domain` has no root dot, and accepting it
  would need every later comparison to agree on the normalisation.
- Non-ASCII addresses are refused (no SMTPUTF8 in the trust space); then `directory.addresses.check_address`
  (dot-atom local part, LDH labels, no single-label or numeric top-level domain).
- Refused syntax: 553 5.1.3 for recipients, 553 5.1.7 for senders (RFC 3463 §3.2: bad destination / sender address
  syntax).

Recipients:
- Order: syntax, then the permanent policy refusals, then the recipient count. A recipient that would be refused for
  good gets its 5xx even when the transaction is full, so the client does not retry a doomed address in a new one.
- Domains compare case-insensitively (RFC 5321 §2.4); configured domains are lower-cased and a trailing dot is ignored.
- Submission: the domain must be local or on the trust list, else 550 5.7.1 "<rcpt>: recipient outside the trust space".
- Relay in (from a peer operator): the domain must be local, else 550 5.7.1 relaying denied (no open relay, not even
  for trusted peers); unknown mailbox 550 5.1.1; disabled mailbox 550 5.2.1 (RFC 3463 §3.2, §3.3).
- Too many recipients: 452 4.5.3 (RFC 5321 §4.5.3.1.10: 452 for too many recipients, the client tries the rest later);
  `count` is the number already accepted in the transaction, refused when `count >= max_recipients`.

Relay senders:
- The envelope sender's domain must be one of the authenticated peer's certificate dNSNames, exactly (a wildcard
  dNSName matches no sender domain), else 550 5.7.1.
- The null reverse-path is accepted from peers: delivery notifications travel with it between operators
  (RFC 5321 §4.5.5, RFC 3464), and refusing them would lose bounces.

Reply texts echo client-supplied addresses in printable ASCII only (others escaped) and cut at 100 characters, so a
reply is always one line under the RFC 5321 §4.5.3.1.5 limit of 512 octets (a peer's domains: the first 5, sorted,
cut at 200 characters, then "and N more").
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from directory.addresses import check_address, domain_of
from gateway.audit.events import AuditEvent
from gateway.policy.verdict import ACCEPT, Accept, Reject, TempFail, Verdict

MAX_LOCAL_OCTETS = 64
MAX_DOMAIN_OCTETS = 253
MAX_ADDRESS_OCTETS = 254
SHOWN_ADDRESS = 100
SHOWN_REASON = 300
SHOWN_PEER_DOMAINS = 5
SHOWN_PEER_LIST = 200


@dataclass(frozen=True, slots=True)
class RecipientFacts:
    """What the directory says of a local recipient mailbox."""

    address: str
    kind: str  # PER ORG APP CAB
    active: bool


def shown(value: str, limit: int = SHOWN_ADDRESS) -> str:
    """`value` made safe for a reply line: printable ASCII kept, the rest escaped, cut at `limit` characters."""
    out = "".join(c if " " <= c <= "~" else c.encode("unicode_escape").decode("ascii") for c in value)
    return out if len(out) <= limit else out[:limit] + "..."


def _octets(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def address_problem(address: str) -> str | None:
    """None if `address` is acceptable on the SMTP envelope of the trust space, else the precise reason."""
    if not address:
        return "the address is empty"
    if address.startswith("@") and ":" in address:
        return "source routes are not accepted"
    local, at, domain = address.rpartition("@")
    if not at:
        return "the address has no '@'"
    if domain.startswith("["):
        return "address literals are not accepted"
    if '"' in local:
        return "quoted local parts are not accepted"
    if "@" in local:
        return "the local part contains '@'"
    if "%" in local:
        return "'%' in the local part is not accepted (percent-hack routing)"
    if "!" in local:
        return "'!' in the local part is not accepted (bang-path routing)"
    if _octets(local) > MAX_LOCAL_OCTETS:
        return f"the local part is {_octets(local)} octets long, more than {MAX_LOCAL_OCTETS}"
    if _octets(domain) > MAX_DOMAIN_OCTETS:
        return f"the domain is {_octets(domain)} octets long, more than {MAX_DOMAIN_OCTETS}"
    if _octets(address) > MAX_ADDRESS_OCTETS:
        return f"the address is {_octets(address)} octets long, more than {MAX_ADDRESS_OCTETS}"
    if domain.endswith("."):
        return "the domain ends with a dot"
    if not address.isascii():
        return "non-ASCII addresses are not accepted"
    return check_address(address)


def _refuse_recipient(code: int, enhanced: str, text: str) -> Reject:
    return Reject(code, enhanced, text, AuditEvent.SMTP_RECIPIENT_REFUSED)


def check_recipient_syntax(rcpt: str) -> Verdict:
    """RCPT TO syntax: 553 5.1.3 with the precise reason, or accept."""
    if not rcpt:
        return _refuse_recipient(553, "5.1.3", "empty recipient address")
    reason = address_problem(rcpt)
    if reason is not None:
        return _refuse_recipient(
            553, "5.1.3", f"invalid recipient address {shown(rcpt)}: {shown(reason, SHOWN_REASON)}"
        )
    return ACCEPT


def _domain_in(domain: str, domains: Collection[str]) -> bool:
    """Whether lower-case `domain` is one of `domains`, compared case-insensitively, trailing dots ignored."""
    return domain in domains or any(d.lower().rstrip(".") == domain for d in domains)


def _too_many(count: int, max_recipients: int) -> TempFail | None:
    if count >= max_recipients:
        return TempFail(452, "4.5.3", "too many recipients", AuditEvent.SMTP_RECIPIENT_REFUSED)
    return None


def check_submission_recipient(
    rcpt: str,
    *,
    local_domains: Collection[str],
    trusted_domains: Collection[str],
    count: int,
    max_recipients: int,
) -> Verdict:
    """A recipient submitted by an authenticated client: its domain must be local or on the trust list."""
    syntax = check_recipient_syntax(rcpt)
    if not isinstance(syntax, Accept):
        return syntax
    domain = domain_of(rcpt)
    if not _domain_in(domain, local_domains) and not _domain_in(domain, trusted_domains):
        return _refuse_recipient(550, "5.7.1", f"{shown(rcpt)}: recipient outside the trust space")
    return _too_many(count, max_recipients) or ACCEPT


def check_relay_recipient(
    rcpt: str,
    *,
    local_domains: Collection[str],
    mailbox: RecipientFacts | None,
    count: int,
    max_recipients: int,
) -> Verdict:
    """A recipient relayed in by a peer operator: it must be an active mailbox of a local domain."""
    syntax = check_recipient_syntax(rcpt)
    if not isinstance(syntax, Accept):
        return syntax
    domain = domain_of(rcpt)
    if not _domain_in(domain, local_domains):
        return _refuse_recipient(
            550, "5.7.1", f"{shown(rcpt)}: relaying denied, {shown(domain)} is not a domain of this operator"
        )
    if mailbox is None:
        return _refuse_recipient(550, "5.1.1", f"{shown(rcpt)}: no such mailbox")
    if not mailbox.active:
        return _refuse_recipient(550, "5.2.1", f"{shown(rcpt)}: mailbox disabled")
    return _too_many(count, max_recipients) or ACCEPT


def check_relay_sender(mail_from: str, *, peer_domains: Collection[str]) -> Verdict:
    """MAIL FROM of a peer operator authenticated by its TLS client certificate naming `peer_domains`."""
    if mail_from in ("", "<>"):
        return ACCEPT  # notifications (DSN, MDN failures) between operators use the null reverse-path
    reason = address_problem(mail_from)
    if reason is not None:
        return Reject(
            553,
            "5.1.7",
            f"invalid sender address {shown(mail_from)}: {shown(reason, SHOWN_REASON)}",
            AuditEvent.SMTP_SENDER_REFUSED,
        )
    domain = domain_of(mail_from)
    if _domain_in(domain, peer_domains):
        return ACCEPT
    peers = sorted({d.lower().rstrip(".") for d in peer_domains})
    listed = shown(", ".join(peers[:SHOWN_PEER_DOMAINS]), SHOWN_PEER_LIST) or "none"
    if len(peers) > SHOWN_PEER_DOMAINS:
        listed += f" and {len(peers) - SHOWN_PEER_DOMAINS} more"
    return Reject(
        550,
        "5.7.1",
        f"sender domain {shown(domain)} is not served by the authenticated peer ({listed})",
        AuditEvent.SMTP_SENDER_REFUSED,
    )
