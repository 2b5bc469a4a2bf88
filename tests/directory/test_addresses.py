"""Mailbox address syntax (directory.addresses): vectors with the exact reasons, RFC 5321 size limits."""

from __future__ import annotations

import pytest

from directory.addresses import check_address, check_domain, domain_of, normalise

LABEL_63 = "a" * 63
DOMAIN_253 = f"{LABEL_63}.{LABEL_63}.{LABEL_63}.{'b' * 61}"  # 63 + 1 + 63 + 1 + 63 + 1 + 61
DOMAIN_254 = f"{LABEL_63}.{LABEL_63}.{LABEL_63}.{'b' * 62}"
ADDRESS_254 = "x" * 64 + "@" + f"{'d' * 63}.{'d' * 63}.{'e' * 58}.fr"  # 64 + 1 + 189
ADDRESS_255 = "x" * 64 + "@" + f"{'d' * 63}.{'d' * 63}.{'e' * 59}.fr"


def test_size_vectors_are_what_they_claim() -> None:
    assert (len(DOMAIN_253), len(DOMAIN_254), len(ADDRESS_254), len(ADDRESS_255)) == (253, 254, 254, 255)


@pytest.mark.parametrize(
    "address",
    [
        "camille.martin@ch-exemple.mssante.fr",
        "Camille.Martin@CH-Exemple.MSSante.fr",  # case is normalised elsewhere, not refused
        "a@b.fr",
        "x" * 64 + "@ch-exemple.mssante.fr",  # 64-octet local part
        ADDRESS_254,
        "o'neil+tag@ch-exemple.mssante.fr",
        "#$&'*+/=?^_`{}~-@ch-exemple.mssante.fr",  # every atext special
        "secretariat_cardio@ch-1.mssante.fr",
        "a@" + LABEL_63 + ".fr",
        "a@x1.f2",  # a TLD with a digit, not all digits
    ],
)
def test_valid_addresses(address: str) -> None:
    assert check_address(address) is None


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("no-at-sign.mssante.fr", "the address has no '@'"),
        ("", "the address has no '@'"),
        ("@ch-exemple.mssante.fr", "the local part is empty"),
        ("x" * 65 + "@ch-exemple.mssante.fr", "the local part is 65 octets long, more than 64"),
        (
            "é" * 33 + "@ch-exemple.mssante.fr",
            "the local part is 66 octets long, more than 64",
        ),  # octets, not characters
        (ADDRESS_255, "the address is 255 characters long, more than 254"),
        ("x" * 65 + "@" + "d" * 190 + ".fr", "the address is 259 characters long, more than 254"),  # checked first
        ('"john doe"@ch-exemple.mssante.fr', "quoted local parts are not accepted"),
        ('"a@b"@ch-exemple.mssante.fr', "quoted local parts are not accepted"),
        ("alice%ch-autre.fr@ch-exemple.mssante.fr", "'%' and '!' (source routing) are not accepted in the local part"),
        ("ch-autre.fr!alice@ch-exemple.mssante.fr", "'%' and '!' (source routing) are not accepted in the local part"),
        (".alice@ch-exemple.mssante.fr", "the local part '.alice' is not a dot-atom"),
        ("alice.@ch-exemple.mssante.fr", "the local part 'alice.' is not a dot-atom"),
        ("al..ice@ch-exemple.mssante.fr", "the local part 'al..ice' is not a dot-atom"),
        ("al ice@ch-exemple.mssante.fr", "the local part 'al ice' is not a dot-atom"),
        ("hélène@ch-exemple.mssante.fr", "the local part 'hélène' is not a dot-atom"),
        ("alice(comment)@ch-exemple.mssante.fr", "the local part 'alice(comment)' is not a dot-atom"),
        ("alice@", "the domain is empty"),
        ("alice@localhost", "the domain 'localhost' has a single label"),
        ("alice@[192.0.2.1]", "the domain label '[192' is not letters, digits and inner hyphens (1 to 63)"),
        ("alice@192.0.2.1", "the domain '192.0.2.1' ends in a numeric label"),
        ("alice@ch-exemple.123", "the domain 'ch-exemple.123' ends in a numeric label"),
        ("alice@-ch.mssante.fr", "the domain label '-ch' is not letters, digits and inner hyphens (1 to 63)"),
        ("alice@ch-.mssante.fr", "the domain label 'ch-' is not letters, digits and inner hyphens (1 to 63)"),
        ("alice@ch..fr", "the domain label '' is not letters, digits and inner hyphens (1 to 63)"),
        ("alice@ch.fr.", "the domain label '' is not letters, digits and inner hyphens (1 to 63)"),
        ("alice@ch_x.fr", "the domain label 'ch_x' is not letters, digits and inner hyphens (1 to 63)"),
        ("alice@hôpital.fr", "the domain label 'hôpital' is not letters, digits and inner hyphens (1 to 63)"),
        (
            "a@" + "a" * 64 + ".fr",
            f"the domain label {'a' * 64!r} is not letters, digits and inner hyphens (1 to 63)",
        ),
    ],
)
def test_invalid_addresses(address: str, reason: str) -> None:
    assert check_address(address) == reason


@pytest.mark.parametrize(
    ("domain", "reason"),
    [
        ("mssante.fr", None),
        ("ch-exemple.mssante.fr", None),
        ("x1.f2", None),
        (DOMAIN_253, None),
        (f"{LABEL_63}.fr", None),
        ("", "the domain is empty"),
        (DOMAIN_254, "the domain is 254 characters long, more than 253"),
        ("fr", "the domain 'fr' has a single label"),
        (f"{'a' * 64}.fr", f"the domain label {'a' * 64!r} is not letters, digits and inner hyphens (1 to 63)"),
        ("mssante.42", "the domain 'mssante.42' ends in a numeric label"),
        ("10.0.0.1", "the domain '10.0.0.1' ends in a numeric label"),
        ("a-.fr", "the domain label 'a-' is not letters, digits and inner hyphens (1 to 63)"),
        ("xn--hpital-fxa.fr", None),  # an IDN in its ASCII form is fine
    ],
)
def test_check_domain(domain: str, reason: str | None) -> None:
    assert check_domain(domain) == reason


def test_normalise_and_domain_of() -> None:
    assert normalise("  Camille.MARTIN@CH-Exemple.MSSante.fr \n") == "camille.martin@ch-exemple.mssante.fr"
    assert domain_of("Camille.Martin@CH-Exemple.MSSante.fr") == "ch-exemple.mssante.fr"
    assert domain_of("a@b@Sub.Example.FR") == "sub.example.fr"  # the last '@' separates the domain
