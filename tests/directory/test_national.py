"""The national extraction format (directory.national): header, every rejection reason, valid rows, files.

Rows are built from one valid synthetic row changed column by column (by header name), so each test
states exactly which field is wrong; every reason is compared as a whole string.
"""

from __future__ import annotations

import hashlib
import io
import unicodedata
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import String

from directory import national
from directory.identifiers import check_adeli, check_rpps
from directory.national import (
    COLUMNS,
    HEADER,
    N_COLUMNS,
    HeaderError,
    Rejection,
    Row,
    check_header,
    fields_from,
    fold,
    format_row,
    iter_lines,
    open_extraction,
    parse_row,
    read_text_lines,
    row_digest,
    search_text,
)
from directory.synthetic import generate_rows
from gateway.store.models import Mailbox, Professional, Structure

IDX = {c.header: i for i, c in enumerate(COLUMNS)}
# A valid PER row (RPPS 10000000009, SIRET structure) and a valid ORG row of the synthetic generator.
PER_ROW = next(generate_rows(1, seed=0))
ORG_ROW = (
    "ORG",
    "secretariat.cardio@ch-exemple.mssante.fr",
    "",
    "",
    "",
    "3",
    "3750712184",
    "Cardiologie",
    *[""] * 9,
    "O",
    "CENTRE HOSPITALIER DE TEST",
    "",
    "",
    "",
    "12",
    "",
    "R",
    "DE LA PAIX",
    "",
    "75013 PARIS",
    "75013",
    "75",
    "FRANCE",
)
ADDRESS = PER_ROW[IDX["Adresse BAL"]]


def changed(row: tuple[str, ...], changes: dict[str, str]) -> tuple[str, ...]:
    fields = list(row)
    for header, value in changes.items():
        fields[IDX[header]] = value
    return tuple(fields)


def line(row: tuple[str, ...] | list[str]) -> bytes:
    return format_row(row).encode()


def rejected(changes: dict[str, str], row: tuple[str, ...] = PER_ROW) -> Rejection | Row:
    return parse_row(7, line(changed(row, changes)))


# --------------------------------------------------------------------------- format description


def test_columns_are_the_31_published_ones() -> None:
    assert N_COLUMNS == len(COLUMNS) == 31
    assert HEADER == (
        "Type de BAL|Adresse BAL|Type Identifiant PP|Identifiant PP|Identification nationale PP|"
        "Type identifiant structure|Identification Structure|Service de rattachement|Civilité d'exercice|"
        "Nom d'exercice|Prénom d'exercice|Catégorie profession|Libellé de catégorie profession|Code Profession|"
        "Libellé Profession|Code savoir-faire|Libellé savoir-faire|Dématérialisation|"
        "Raison Sociale structure BAL|Enseigne commerciale structure BAL|Complément localisation structure BAL|"
        "Complément distribution structure BAL|Numéro Voie structure BAL|Complément Numéro Voie structure BAL|"
        "Type Voie structure BAL|Libellé Voie structure BAL|Lieu-dit structure BAL|"
        "Ligne Acheminement structure BAL|Code postal structure BAL|Département structure BAL|Pays structure BAL"
    )
    assert national.PART_ATTRS == {
        "mailbox": ("kind", "address", "service", "dematerialisation"),
        "professional": (
            "id_type",
            "id_pp",
            "id_nat_ps",
            "civility",
            "last_name",
            "first_name",
            "category_code",
            "category_label",
            "profession_code",
            "profession_label",
            "skill_code",
            "skill_label",
        ),
        "structure": (
            "id_type",
            "identification",
            "name",
            "trade_name",
            "location_complement",
            "distribution_complement",
            "street_number",
            "street_number_complement",
            "street_type",
            "street_name",
            "locality",
            "routing_line",
            "postal_code",
            "department",
            "country",
        ),
    }


def test_column_limits_match_the_database_columns() -> None:
    """Every field fits its column: the format's limit is the column's String length (the address column
    is wider, 320, than the format's 254, which is RFC 5321's limit)."""
    models = {"mailbox": Mailbox, "professional": Professional, "structure": Structure}
    lengths = {}
    for column in COLUMNS:
        sql_type = models[column.part].__table__.c[column.attr].type
        assert isinstance(sql_type, String), column.header
        assert sql_type.length is not None
        assert column.max_len <= sql_type.length, column.header
        lengths[column.header] = (column.max_len, sql_type.length)
    wider = {h: v for h, v in lengths.items() if v[0] != v[1]}
    assert wider == {"Adresse BAL": (254, 320)}
    assert lengths["Service de rattachement"] == (300, 300)
    assert lengths["Type de BAL"] == (3, 3)


# --------------------------------------------------------------------------- header


def test_header_accepted_with_bom_and_line_ending() -> None:
    check_header(HEADER)
    check_header(HEADER + "\n")
    check_header(HEADER + "\r\n")
    check_header("\ufeff" + HEADER + "\r\n")
    rows = list(iter_lines(io.BytesIO(("\ufeff" + HEADER + "\r\n").encode() + line(PER_ROW))))
    assert rows == [(2, line(PER_ROW))]


def test_header_wrong_column_count() -> None:
    with pytest.raises(HeaderError) as exc:
        check_header(HEADER.rsplit("|", 1)[0])
    assert str(exc.value) == (
        "the header line has 30 columns, expected 31 (is this an 'Extraction correspondance MSSanté' file?)"
    )
    with pytest.raises(HeaderError) as exc:
        check_header("email;name;rpps")
    assert str(exc.value) == (
        "the header line has 1 columns, expected 31 (is this an 'Extraction correspondance MSSanté' file?)"
    )


def test_header_wrong_column_name_names_both() -> None:
    names = HEADER.split("|")
    names[9] = "Nom"
    with pytest.raises(HeaderError) as exc:
        check_header("|".join(names))
    assert str(exc.value) == "header column 10 is 'Nom', expected \"Nom d'exercice\""
    names = HEADER.split("|")
    names[0], names[1] = names[1], names[0]
    with pytest.raises(HeaderError) as exc:
        check_header("|".join(names))
    assert str(exc.value) == "header column 1 is 'Adresse BAL', expected 'Type de BAL'"


def test_header_empty_file_and_not_utf8() -> None:
    with pytest.raises(HeaderError) as exc:
        list(iter_lines(io.BytesIO(b"")))
    assert str(exc.value) == "the file is empty: no header line"
    with pytest.raises(HeaderError) as exc:
        list(iter_lines(io.BytesIO(HEADER.encode("latin-1") + b"\n")))
    assert str(exc.value) == "the header line is not valid UTF-8"


def test_iter_lines_numbers_lines_and_skips_blank_ones() -> None:
    data = (HEADER + "\n").encode() + line(PER_ROW) + b"\n\r\n" + line(ORG_ROW)
    assert list(iter_lines(io.BytesIO(data))) == [(2, line(PER_ROW)), (5, line(ORG_ROW))]
    assert list(read_text_lines(data.decode())) == [(2, line(PER_ROW)), (5, line(ORG_ROW))]


def test_over_long_line_is_refused_and_never_read_whole() -> None:
    """No row is longer than 4,157 characters: a longer line (a damaged file, a ZIP bomb of one endless line) is
    refused by its number, read and dropped in bounded pieces, and the lines after it still imported."""
    assert sum(c.max_len for c in COLUMNS) * 4 + N_COLUMNS + 1 < national.MAX_LINE
    endless = b"A" * (5 * national.MAX_LINE) + b"|" * 30 + b"\n"
    longest = b"PER" + b"|" * 30 + b"A" * (national.MAX_LINE - 34) + b"\n"  # MAX_LINE bytes with its line ending
    data = (HEADER + "\n").encode() + line(PER_ROW) + endless + line(ORG_ROW) + longest
    stream = io.BufferedReader(io.BytesIO(data), 4096)
    got = list(iter_lines(stream))
    assert [(n, len(raw)) for n, raw in got] == [
        (2, len(line(PER_ROW))),
        (3, national.MAX_LINE + 1),
        (4, len(line(ORG_ROW))),
        (5, national.MAX_LINE),
    ]
    assert parse_row(*got[1]) == Rejection(3, f"the line is longer than {national.MAX_LINE} bytes")
    assert isinstance(parse_row(*got[2]), Row)
    assert parse_row(*got[3]) == Rejection(
        5, f"column 'Pays structure BAL' is {national.MAX_LINE - 34} characters long, more than 64", ""
    )


# --------------------------------------------------------------------------- rejections, one per reason


def test_wrong_field_count() -> None:
    assert parse_row(7, line(PER_ROW[:-1])) == Rejection(7, "expected 31 fields separated by '|', found 30")
    assert parse_row(8, line((*PER_ROW, "extra"))) == Rejection(8, "expected 31 fields separated by '|', found 32")
    assert parse_row(9, b"just text\n") == Rejection(9, "expected 31 fields separated by '|', found 1")


def test_invalid_utf8_names_the_byte() -> None:
    good = line(PER_ROW)
    at = good.index(b"MARTIN")
    bad = good[:at] + b"\xc3(" + good[at:]  # a truncated two-byte sequence
    assert parse_row(4, bad) == Rejection(4, f"not valid UTF-8 (byte {at + 1} of the line)")
    assert parse_row(4, b"\xff" + good) == Rejection(4, "not valid UTF-8 (byte 1 of the line)")
    latin1 = "|".join(PER_ROW).encode("latin-1")  # "Médecin" in Latin-1
    first_e_acute = latin1.index(b"\xe9")
    assert first_e_acute == 119  # "PER|camille.martin0@...|Civil|10|M" is 119 bytes
    assert parse_row(5, latin1) == Rejection(5, "not valid UTF-8 (byte 120 of the line)")


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Nom d'exercice", "MAR\tTIN"),
        ("Service de rattachement", "Urgences\x00"),
        ("Pays structure BAL", "FRANCE\x7f"),
        ("Libellé Voie structure BAL", "RUE\rDU PONT"),  # a bare CR inside the line
    ],
)
def test_control_character_names_the_column(header: str, value: str) -> None:
    result = rejected({header: value})
    assert result == Rejection(7, f"column {header!r} holds a control character", ADDRESS)


def test_control_character_exact_message() -> None:
    assert rejected({"Nom d'exercice": "A\x01"}) == Rejection(
        7, 'column "Nom d\'exercice" holds a control character', ADDRESS
    )


def test_over_long_columns() -> None:
    assert rejected({"Service de rattachement": "s" * 301}) == Rejection(
        7, "column 'Service de rattachement' is 301 characters long, more than 300", ADDRESS
    )
    assert rejected({"Type de BAL": "PERS"}) == Rejection(
        7, "column 'Type de BAL' is 4 characters long, more than 3", ADDRESS
    )
    assert rejected({"Code postal structure BAL": "7" * 17}) == Rejection(
        7, "column 'Code postal structure BAL' is 17 characters long, more than 16", ADDRESS
    )
    # Characters, not bytes: 300 two-byte characters fit.
    assert isinstance(rejected({"Service de rattachement": "é" * 300}), Row)
    long_address = "x" * 64 + "@" + "d" * 190 + ".fr"
    assert rejected({"Adresse BAL": long_address}) == Rejection(
        7, "column 'Adresse BAL' is 258 characters long, more than 254", long_address
    )


def test_unknown_mailbox_type() -> None:
    assert rejected({"Type de BAL": "XYZ"}) == Rejection(
        7, "Type de BAL 'XYZ' is not one of PER, ORG, APP, CAB", ADDRESS
    )
    assert rejected({"Type de BAL": "per"}) == Rejection(
        7, "Type de BAL 'per' is not one of PER, ORG, APP, CAB", ADDRESS
    )
    assert rejected({"Type de BAL": ""}) == Rejection(7, "Type de BAL '' is not one of PER, ORG, APP, CAB", ADDRESS)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("no-at-sign.mssante.fr", "Adresse BAL 'no-at-sign.mssante.fr': the address has no '@'"),
        (
            '"Dr Martin"@ch-exemple.mssante.fr',
            "Adresse BAL '\"Dr Martin\"@ch-exemple.mssante.fr': quoted local parts are not accepted",
        ),
        (
            "alice%ch-autre.fr@ch-exemple.mssante.fr",
            "Adresse BAL 'alice%ch-autre.fr@ch-exemple.mssante.fr': "
            "'%' and '!' (source routing) are not accepted in the local part",
        ),
        (
            "x" * 65 + "@ch-exemple.mssante.fr",
            f"Adresse BAL '{'x' * 65}@ch-exemple.mssante.fr': the local part is 65 octets long, more than 64",
        ),
        (
            "alice@ch_exemple.mssante.fr",
            "Adresse BAL 'alice@ch_exemple.mssante.fr': "
            "the domain label 'ch_exemple' is not letters, digits and inner hyphens (1 to 63)",
        ),
        (
            "Alice@CH-Exemple.123",
            "Adresse BAL 'Alice@CH-Exemple.123': the domain 'CH-Exemple.123' ends in a numeric label",
        ),
        ("", "Adresse BAL '': the address has no '@'"),
    ],
)
def test_invalid_address(address: str, reason: str) -> None:
    assert rejected({"Adresse BAL": address}) == Rejection(7, reason, address.lower())


@pytest.mark.parametrize(
    "changes",
    [
        {"Type Identifiant PP": ""},
        {"Identifiant PP": ""},
        {"Identification nationale PP": ""},
        {"Type Identifiant PP": "", "Identifiant PP": ""},
    ],
)
def test_professional_identifiers_incomplete(changes: dict[str, str]) -> None:
    assert rejected(changes) == Rejection(
        7, "Type Identifiant PP, Identifiant PP and Identification nationale PP must be given together", ADDRESS
    )


def test_unknown_professional_identifier_type() -> None:
    assert rejected({"Type Identifiant PP": "5", "Identification nationale PP": "510000000009"}) == Rejection(
        7, "Type Identifiant PP '5' is not one of 0 (ADELI), 8 (RPPS)", ADDRESS
    )


def test_rpps_luhn_failure() -> None:
    assert PER_ROW[IDX["Identifiant PP"]] == "10000000009"
    changes = {"Identifiant PP": "10000000008", "Identification nationale PP": "810000000008"}
    assert rejected(changes) == Rejection(7, "Identifiant PP: RPPS check digit is 8, expected 9 (Luhn)", ADDRESS)
    changes = {"Identifiant PP": "1000000000", "Identification nationale PP": "81000000000"}
    assert rejected(changes) == Rejection(7, "Identifiant PP: RPPS must be 11 digits, got 10 characters", ADDRESS)


def test_adeli_checked_for_type_0() -> None:
    ok = {"Type Identifiant PP": "0", "Identifiant PP": "780000030", "Identification nationale PP": "0780000030"}
    assert isinstance(rejected(ok), Row)
    bad = {"Type Identifiant PP": "0", "Identifiant PP": "780000031", "Identification nationale PP": "0780000031"}
    assert rejected(bad) == Rejection(7, "Identifiant PP: ADELI check digit is 1, expected 0 (Luhn)", ADDRESS)


def test_idnatps_must_be_type_plus_identifier() -> None:
    assert rejected({"Identification nationale PP": "810000000017"}) == Rejection(
        7,
        "Identification nationale PP '810000000017' is not Type Identifiant PP + Identifiant PP ('810000000009')",
        ADDRESS,
    )
    assert rejected({"Identification nationale PP": "010000000009"}) == Rejection(
        7,
        "Identification nationale PP '010000000009' is not Type Identifiant PP + Identifiant PP ('810000000009')",
        ADDRESS,
    )


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (
            {"Identifiant PP": "10000000009 ", "Identification nationale PP": "810000000009 "},
            "Identifiant PP '10000000009 ' has whitespace around it",
        ),
        (
            {"Type Identifiant PP": "0", "Identifiant PP": " 780000030", "Identification nationale PP": "0 780000030"},
            "Identifiant PP ' 780000030' has whitespace around it",
        ),
        (
            {"Type identifiant structure": "3", "Identification Structure": " 3750712184"},
            "Identification Structure ' 3750712184' has whitespace around it",
        ),
        (
            {"Type identifiant structure": "5", "Identification Structure": "573282932000074\u00a0"},
            "Identification Structure '573282932000074\\xa0' has whitespace around it",
        ),
    ],
)
def test_identifiers_with_surrounding_whitespace_are_refused(changes: dict[str, str], reason: str) -> None:
    """The identifiers module strips what it checks; stored as read, "810000000009 " was a second professional
    beside "810000000009" (and a structure key "3: 3750712184"): the import refuses it, it does not guess."""
    assert rejected(changes) == Rejection(7, reason, ADDRESS)


@pytest.mark.parametrize("changes", [{"Type identifiant structure": ""}, {"Identification Structure": ""}])
def test_structure_identifiers_incomplete(changes: dict[str, str]) -> None:
    assert rejected(changes) == Rejection(
        7, "Type identifiant structure and Identification Structure must be given together", ADDRESS
    )


def test_unknown_structure_identifier_type() -> None:
    assert rejected({"Type identifiant structure": "2", "Identification Structure": "2123"}) == Rejection(
        7,
        "Type identifiant structure '2' is not one of 1 (Cabinet ADELI), 3 (FINESS), 4 (SIREN), 5 (SIRET), "
        "6 (Cabinet RPPS)",
        ADDRESS,
    )


@pytest.mark.parametrize(
    ("st_type", "st_id", "reason"),
    [
        (
            "3",
            "312345678",
            "Identification Structure: structure identifier of type 3 (FINESS): "
            "FINESS must be 9 characters, got 8 characters",
        ),
        (
            "3",
            "37507121A4",
            "Identification Structure: structure identifier of type 3 (FINESS): "
            "FINESS must match [0-9][0-9A-Z][0-9]{7}: character 8 'A' is not a digit",
        ),
        (
            "3",
            "9750712184",
            "Identification Structure: structure identifier of type 3 (FINESS) must start with '3', got '9'",
        ),
        (
            "5",
            "573282932000075",
            "Identification Structure: structure identifier of type 5 (SIRET): "
            "SIRET check digit is 5, expected 4 (Luhn)",
        ),
        (
            "5",
            "57328293200007",
            "Identification Structure: structure identifier of type 5 (SIRET): "
            "SIRET must be 14 digits, got 13 characters",
        ),
    ],
)
def test_bad_finess_or_siret(st_type: str, st_id: str, reason: str) -> None:
    changes = {"Type identifiant structure": st_type, "Identification Structure": st_id}
    assert rejected(changes) == Rejection(7, reason, ADDRESS)


def test_valid_structure_identifiers() -> None:
    for st_type, st_id in [("3", "3750712184"), ("3", "32A0000019"), ("5", "573282932000074"), ("4", "4732829320")]:
        result = rejected({"Type identifiant structure": st_type, "Identification Structure": st_id})
        assert isinstance(result, Row), (st_type, st_id, result)


def test_first_failing_check_wins() -> None:
    """Length is checked before the type, the type before the address, the address before identifiers."""
    assert rejected({"Type de BAL": "XYZ", "Adresse BAL": "nope"}) == Rejection(
        7, "Type de BAL 'XYZ' is not one of PER, ORG, APP, CAB", "nope"
    )
    assert rejected({"Adresse BAL": "nope", "Identifiant PP": ""}) == Rejection(
        7, "Adresse BAL 'nope': the address has no '@'", "nope"
    )


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789", min_size=9, max_size=11))
def test_rpps_and_adeli_acceptance_matches_the_identifiers_module(ident: str) -> None:
    """parse_row decides the usual identifiers itself: it must agree with directory.identifiers."""
    for pp_type, check in (("8", check_rpps), ("0", check_adeli)):
        changes = {
            "Type Identifiant PP": pp_type,
            "Identifiant PP": ident,
            "Identification nationale PP": pp_type + ident,
        }
        result = rejected(changes)
        reason = check(ident)
        if reason is None:
            assert isinstance(result, Row)
        else:
            assert result == Rejection(7, f"Identifiant PP: {reason}", ADDRESS)


# --------------------------------------------------------------------------- valid rows


def test_valid_row_fields_digest_and_keys() -> None:
    row = parse_row(12, line(PER_ROW))
    assert isinstance(row, Row)
    assert (row.line, row.fields, row.kind, row.address) == (
        12,
        PER_ROW,
        "PER",
        "camille.martin0@ch-exemple.mssante.fr",
    )
    assert row.digest == hashlib.blake2b("|".join(PER_ROW).encode(), digest_size=16).digest()
    assert row.digest == row_digest(PER_ROW)
    assert row.professional_key == "810000000009"
    assert row.structure_key == "5:500000000000000"
    assert row.part("mailbox") == {
        "kind": "PER",
        "address": "camille.martin0@ch-exemple.mssante.fr",
        "service": "",
        "dematerialisation": "O",
    }
    assert row.part("professional")["last_name"] == "MARTIN"
    assert row.values("structure")[:3] == ("5", "500000000000000", "CABINET MEDICAL MARTIN")


def test_address_is_lower_cased_and_digest_follows() -> None:
    upper = changed(PER_ROW, {"Adresse BAL": "Camille.MARTIN0@CH-Exemple.MSSante.fr"})
    row = parse_row(3, line(upper))
    assert isinstance(row, Row)
    assert row.address == "camille.martin0@ch-exemple.mssante.fr"
    assert row.fields == PER_ROW  # the lower-cased address is what is stored
    assert row.digest == row_digest(PER_ROW)


def test_professional_key_without_national_identifier() -> None:
    no_id = changed(PER_ROW, {"Type Identifiant PP": "", "Identifiant PP": "", "Identification nationale PP": ""})
    row = parse_row(3, line(no_id))
    assert isinstance(row, Row)
    assert row.professional_key == "bal:camille.martin0@ch-exemple.mssante.fr"
    org = parse_row(4, line(ORG_ROW))
    assert isinstance(org, Row)
    assert org.professional_key is None  # no person at all
    assert org.structure_key == "3:3750712184"


def test_structure_key_without_identifier() -> None:
    anon = changed(ORG_ROW, {"Type identifiant structure": "", "Identification Structure": ""})
    row = parse_row(3, line(anon))
    assert isinstance(row, Row)
    described = "|".join(anon[i] for i in national.STRUCTURE_IDX)
    assert row.structure_key == "anon:" + hashlib.blake2b(described.encode(), digest_size=12).hexdigest()
    assert len(row.structure_key) == 5 + 24
    bare = changed(anon, {h: "" for h in HEADER.split("|")[18:]})
    row = parse_row(3, line(bare))
    assert isinstance(row, Row)
    assert row.structure_key is None


def test_crlf_line_endings() -> None:
    lf = parse_row(2, line(PER_ROW))
    crlf = parse_row(2, line(PER_ROW)[:-1] + b"\r\n")
    bare = parse_row(2, line(PER_ROW)[:-1])
    assert isinstance(lf, Row)
    assert lf == crlf == bare
    assert crlf.fields[-1] == "FRANCE"
    data = (HEADER + "\r\n").encode() + line(PER_ROW)[:-1] + b"\r\n" + line(ORG_ROW)[:-1] + b"\r\n"
    parsed = [parse_row(n, raw) for n, raw in iter_lines(io.BytesIO(data))]
    assert [(p.line, p.fields) for p in parsed if isinstance(p, Row)] == [(2, PER_ROW), (3, ORG_ROW)]


def test_format_and_fields_from_give_the_line_back() -> None:
    row = parse_row(2, line(ORG_ROW))
    assert isinstance(row, Row)
    assert fields_from(row.part("mailbox"), row.part("professional"), row.part("structure")) == ORG_ROW
    assert format_row(ORG_ROW).encode() == line(ORG_ROW)
    assert fields_from({"kind": "APP", "address": "dpi@x.fr"}, {}, {}) == ("APP", "dpi@x.fr", *[""] * 29)


# --------------------------------------------------------------------------- search text


def _fold_reference(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch)).lower()


def test_fold() -> None:
    assert fold("Hélène GUÉRIN-FRANÇOIS") == "helene guerin-francois"
    assert fold("ŒUVRE ﬁlle") == "œuvre fille"  # compatibility decomposition of the ligature fi
    assert fold("plain ascii") == "plain ascii"
    assert fold("İstanbul") == "istanbul"


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_fold_is_nfkd_without_combining_marks(text: str) -> None:
    assert fold(text) == _fold_reference(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="|\n\r")), min_size=31, max_size=31))
def test_search_text_is_the_folded_searchable_fields(fields: list[str]) -> None:
    searchable = [national._IDX[k] for k in national._SEARCH_KEYS]
    expected = _fold_reference(" ".join(fields[i] for i in searchable if fields[i]))
    assert search_text(tuple(fields)) == expected


def test_search_text_of_a_row() -> None:
    assert search_text(PER_ROW) == (
        "camille.martin0@ch-exemple.mssante.fr 810000000009 martin camille medecin medecine generale (sm) "
        "500000000000000 cabinet medical martin 75013 75013 paris"
    )


# --------------------------------------------------------------------------- files


def test_open_plain_file(tmp_path: Path) -> None:
    path = tmp_path / "extraction.txt"
    data = (HEADER + "\n").encode() + line(PER_ROW) + line(ORG_ROW)
    path.write_bytes(data)
    stream, size = open_extraction(path)
    with stream:
        assert size == len(data)
        assert list(iter_lines(stream)) == [(2, line(PER_ROW)), (3, line(ORG_ROW))]


def test_open_zip_with_one_txt_member(tmp_path: Path) -> None:
    path = tmp_path / "Extraction_Correspondance_MSSante.zip"
    text = (HEADER + "\n").encode() + line(PER_ROW) + line(ORG_ROW)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Extraction_Correspondance_MSSante_20260101.txt", text)
        zf.writestr("docs/", b"")  # a directory entry is not a member that counts
    stream, size = open_extraction(path)
    with stream:
        assert size == len(text)
        assert list(iter_lines(stream)) == [(2, line(PER_ROW)), (3, line(ORG_ROW))]


def test_zip_with_two_members_names_them(tmp_path: Path) -> None:
    path = tmp_path / "two.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.txt", HEADER + "\n")
        zf.writestr("b.txt", HEADER + "\n")
    with pytest.raises(HeaderError) as exc:
        open_extraction(path)
    assert str(exc.value) == f"{path} must hold exactly one .txt extraction, it holds a.txt, b.txt"


def test_zip_without_txt_member(tmp_path: Path) -> None:
    path = tmp_path / "none.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.md", "hello")
    with pytest.raises(HeaderError) as exc:
        open_extraction(path)
    assert str(exc.value) == f"{path} must hold exactly one .txt extraction, it holds readme.md"
