"""Synthetic national extraction rows: realistic shape, valid identifiers, no real person.

Used by the import benchmark (536,000 rows, the national size), the demo and the tests. Deterministic
for a given seed. Each professional and each structure is always described the same way, so a
generated file imports without conflicts and exports back identically. The national file's mix is
imitated: about 85 % PER (RPPS mostly, some ADELI, a few without national identifier), 14 % ORG,
the rest APP and CAB; one professional in five has a second mailbox.
"""

from __future__ import annotations

import random
import zipfile
from collections.abc import Iterator
from pathlib import Path

from stdnum import luhn

from directory.national import HEADER, fold, format_row

# fmt: off
LAST = [
    "MARTIN", "BERNARD", "THOMAS", "PETIT", "ROBERT", "RICHARD", "DURAND", "DUBOIS", "MOREAU", "LAURENT",
    "SIMON", "MICHEL", "LEFEBVRE", "LEROY", "ROUX", "DAVID", "BERTRAND", "MOREL", "FOURNIER", "GIRARD",
    "BONNET", "DUPONT", "LAMBERT", "FONTAINE", "ROUSSEAU", "VINCENT", "MULLER", "LEFEVRE", "FAURE", "ANDRÉ",
    "MERCIER", "BLANC", "GUÉRIN", "BOYER", "GARNIER", "CHEVALIER", "FRANÇOIS", "LEGRAND", "GAUTHIER", "GARCIA",
]
FIRST = [  # ten women's first names, then ten men's
    "Camille", "Léa", "Manon", "Chloé", "Inès", "Sarah", "Hélène", "Claire", "Anne", "Marie",
    "Lucas", "Hugo", "Louis", "Gabriel", "Arthur", "Jules", "Paul", "Nicolas", "Julien", "Étienne",
]
PROFESSIONS = [  # (category, category label, code, label, skill code, skill label, id type)
    ("C", "Civil", "10", "Médecin", "SM54", "Médecine Générale (SM)", "8"),
    ("C", "Civil", "10", "Médecin", "SM04", "Cardiologie et maladies vasculaires", "8"),
    ("C", "Civil", "10", "Médecin", "SM26", "Pédiatrie", "8"),
    ("C", "Civil", "21", "Pharmacien", "", "", "8"),
    ("C", "Civil", "40", "Chirurgien-Dentiste", "", "", "8"),
    ("C", "Civil", "50", "Sage-Femme", "", "", "8"),
    ("C", "Civil", "60", "Infirmier", "", "", "8"),
    ("C", "Civil", "70", "Masseur-Kinésithérapeute", "", "", "8"),
    ("C", "Civil", "80", "Pédicure-Podologue", "", "", "8"),
    ("C", "Civil", "26", "Audioprothésiste", "", "", "0"),
    ("C", "Civil", "28", "Opticien-Lunetier", "", "", "0"),
    ("C", "Civil", "91", "Orthophoniste", "", "", "0"),
]
CITIES = [
    ("75013", "PARIS", "75"), ("69003", "LYON", "69"), ("13005", "MARSEILLE", "13"), ("31000", "TOULOUSE", "31"),
    ("33000", "BORDEAUX", "33"), ("59000", "LILLE", "59"), ("67000", "STRASBOURG", "67"),
    ("44000", "NANTES", "44"), ("20000", "AJACCIO", "2A"), ("97400", "SAINT DENIS", "974"),
]
SERVICES = ["Cardiologie", "Urgences", "Pédiatrie", "Radiologie", "Biologie", "Secrétariat médical", "Oncologie"]
DOMAINS = [
    "ch-exemple.mssante.fr", "chu-exemple.mssante.fr", "medecin.mssante.fr", "pharmacien.mssante.fr",
    "infirmier.mssante.fr", "clinique-exemple.mssante.fr", "ght-exemple.mssante.fr",
]
STREET_TYPES = ["R", "AV", "BD", "PL", "CHE", "ALL"]
# fmt: on


def with_luhn(body: str) -> str:
    return body + luhn.calc_check_digit(body)


def rpps(i: int) -> str:
    return with_luhn(f"1{i:09d}")


def adeli(i: int) -> str:
    return with_luhn(f"{75 + i % 20:02d}{i % 1_000_000:06d}")


def _structure(j: int) -> tuple[str, ...]:
    """The 16 structure fields of structure j (identification type, id, name ... country)."""
    cp, city, dept = CITIES[j % len(CITIES)]
    if j % 3 == 0:
        kind, ident = "5", "5" + with_luhn(with_luhn(f"{j % 100_000_000:08d}") + f"{j % 10_000:04d}")  # SIRET
        name = f"CABINET MEDICAL {LAST[j % len(LAST)]}"
    else:
        kind, ident = "3", "3" + with_luhn(f"{j % 100_000_000:08d}")  # FINESS shape, Luhn key
        name = f"CENTRE HOSPITALIER {city} {j}"
    return (
        kind,
        ident,
        name,
        "",
        "",
        "",
        str(1 + j % 120),
        "",
        STREET_TYPES[j % len(STREET_TYPES)],
        f"DE LA REPUBLIQUE {j % 50}",
        "",
        f"{cp} {city}",
        cp,
        dept,
        "FRANCE",
    )


def generate_rows(n: int, *, seed: int = 0, duplicates: int = 0) -> Iterator[tuple[str, ...]]:
    """`n` rows of 31 fields; `duplicates` extra rows repeat an earlier address (as the national file does)."""
    rng = random.Random(seed)
    n_structures = max(1, n // 9)
    repeat = set(random.Random(seed + 1).sample(range(n), min(duplicates, n)))
    kept: list[tuple[str, ...]] = []
    person = 0
    i = 0

    def emit(row: tuple[str, ...]) -> tuple[str, ...]:
        nonlocal i
        if i in repeat:
            kept.append(row)
        i += 1
        return row

    while i < n:
        r = rng.random()
        s = _structure(rng.randrange(n_structures))
        if r < 0.85:  # PER, sometimes two mailboxes for one professional
            mailboxes = 2 if rng.random() < 0.2 and i + 1 < n else 1
            cat, cat_l, code, label, skill, skill_l, id_type = PROFESSIONS[person % len(PROFESSIONS)]
            last, first = LAST[person % len(LAST)], FIRST[(person // len(LAST)) % len(FIRST)]
            if person % 20 == 19:  # a PER mailbox with no national identifier
                ids: tuple[str, str, str] = ("", "", "")
            else:
                ident = rpps(person) if id_type == "8" else adeli(person)
                ids = (id_type, ident, id_type + ident)
            for m in range(mailboxes):
                local = f"{fold(first)}.{fold(last)}{person}"
                domain = DOMAINS[(person + m) % len(DOMAINS)]
                yield emit(
                    (
                        "PER",
                        f"{local}{'.' + str(m) if m else ''}@{domain}",
                        *ids,
                        s[0],
                        s[1],
                        "",
                        "MME" if FIRST.index(first) < 10 else "M",
                        last,
                        first,
                        cat,
                        cat_l,
                        code,
                        label,
                        skill,
                        skill_l,
                        "O",
                        *s[2:],
                    )
                )
            person += 1
        else:
            kind = "ORG" if r < 0.99 else ("APP" if r < 0.995 else "CAB")
            service = SERVICES[i % len(SERVICES)] if kind == "ORG" else ""
            local = {"ORG": "secretariat", "APP": "dpi", "CAB": "cabinet"}[kind]
            yield emit(
                (
                    kind,
                    f"{local}.{i}@{DOMAINS[i % len(DOMAINS)]}",
                    "",
                    "",
                    "",
                    s[0],
                    s[1],
                    service,
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "O",
                    *s[2:],
                )
            )
    # The national file's duplicates repeat an address with different content: here, the service.
    for row in kept:
        yield (*row[:7], "Service bis", *row[8:])


def write_extraction(path: Path, rows: Iterator[tuple[str, ...]], *, zipped: bool = False) -> int:
    """Write a national extraction file (or a ZIP holding it); returns the number of data rows."""
    n = 0
    tmp = path.with_suffix(".txt") if zipped else path
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        fh.write(HEADER + "\n")
        for row in rows:
            fh.write(format_row(row))
            n += 1
    if zipped:
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.write(tmp, arcname="Extraction_Correspondance_MSSante.txt")
        tmp.unlink()
    return n
