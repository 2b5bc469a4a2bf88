"""Tests for directory.identifiers: vectors with exact reasons, plus property tests.

The property tests compute Luhn digits and INS keys with small reference implementations
written here (not with python-stdnum, which the module under test uses), so they can catch a
wrong use of the library as well as a wrong rule.
"""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum.fr import nir, siren, siret

from directory.identifiers import (
    IDNATPS_OID,
    INS_NIA_OID,
    INS_NIA_TEST_OID,
    INS_NIR_OID,
    INS_NIR_TEST_OID,
    PP_ID_TYPES,
    STRUCTURE_ID_TYPES,
    InvalidIdentifier,
    check_adeli,
    check_finess,
    check_idnatps,
    check_ins,
    check_rpps,
    check_siren,
    check_siret,
    check_structure_id,
    compact_ins,
    idnatps_from,
    ins_key,
    split_idnatps,
    validate_adeli,
    validate_finess,
    validate_idnatps,
    validate_ins,
    validate_rpps,
    validate_siren,
    validate_siret,
    validate_structure_id,
)

# --------------------------------------------------------------------------- references


def ref_luhn_digit(body: str) -> int:
    """Textbook Luhn: double every second digit starting from the rightmost digit of the body."""
    total = 0
    for i, c in enumerate(reversed(body)):
        d = int(c)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10


def ref_ins_key(first13: str) -> str:
    number = first13[:5] + {"2A": "19", "2B": "18"}.get(first13[5:7], first13[5:7]) + first13[7:]
    return f"{97 - int(number) % 97:02d}"


def digit_strings(n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789", min_size=n, max_size=n)


# --------------------------------------------------------------------------- the exception


def test_invalid_identifier_attributes_and_message() -> None:
    exc = InvalidIdentifier("RPPS", "123", "RPPS must be 11 digits, got 3 characters")
    assert isinstance(exc, ValueError)
    assert (exc.kind, exc.value, exc.reason) == ("RPPS", "123", "RPPS must be 11 digits, got 3 characters")
    assert str(exc) == "invalid RPPS '123': RPPS must be 11 digits, got 3 characters"


def test_invalid_identifier_survives_pickling() -> None:
    exc = InvalidIdentifier("INS", "1", "INS is too short")
    back = pickle.loads(pickle.dumps(exc))  # noqa: S301 - round trip of our own object
    assert (type(back), back.kind, back.value, back.reason, str(back)) == (
        InvalidIdentifier,
        "INS",
        "1",
        "INS is too short",
        "invalid INS '1': INS is too short",
    )


def test_validate_raises_with_the_check_reason() -> None:
    with pytest.raises(InvalidIdentifier) as info:
        validate_rpps(" 10003461033 ")
    assert info.value.kind == "RPPS"
    assert info.value.value == "10003461033"
    assert info.value.reason == "RPPS check digit is 3, expected 4 (Luhn)"
    assert str(info.value) == "invalid RPPS '10003461033': RPPS check digit is 3, expected 4 (Luhn)"


# --------------------------------------------------------------------------- constants


def test_constants() -> None:
    assert IDNATPS_OID == "1.2.250.1.71.4.2.1"
    assert (INS_NIR_OID, INS_NIA_OID, INS_NIR_TEST_OID, INS_NIA_TEST_OID) == (
        "1.2.250.1.213.1.4.8",
        "1.2.250.1.213.1.4.9",
        "1.2.250.1.213.1.4.10",
        "1.2.250.1.213.1.4.11",
    )
    assert PP_ID_TYPES == {"0": "ADELI", "8": "RPPS"}
    assert STRUCTURE_ID_TYPES == {
        "1": "Cabinet ADELI",
        "3": "FINESS",
        "4": "SIREN",
        "5": "SIRET",
        "6": "Cabinet RPPS",
    }


# --------------------------------------------------------------------------- RPPS

VALID_RPPS = ["10003461034", "10100000008", "19999999998", "80000000002", "21123456788"]


@pytest.mark.parametrize("value", VALID_RPPS)
def test_rpps_valid(value: str) -> None:
    assert check_rpps(value) is None
    assert validate_rpps(value) == value
    assert ref_luhn_digit(value[:-1]) == int(value[-1])  # the vectors themselves are right


def test_rpps_brief_example_is_not_luhn_valid() -> None:
    # The domain brief gives RPPS 10003461033 / IdNatPS 810003461033: its check digit is wrong.
    assert ref_luhn_digit("1000346103") == 4
    assert check_rpps("10003461033") == "RPPS check digit is 3, expected 4 (Luhn)"
    assert check_idnatps("810003461033") == "IdNatPS prefix '8' (RPPS): RPPS check digit is 3, expected 4 (Luhn)"


def test_rpps_strips_surrounding_whitespace() -> None:
    assert validate_rpps(" \t10003461034\n") == "10003461034"
    assert check_rpps("  10003461034  ") is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "RPPS is empty"),
        ("   ", "RPPS is empty"),
        ("1000346103", "RPPS must be 11 digits, got 10 characters"),
        ("100034610345", "RPPS must be 11 digits, got 12 characters"),
        ("1000346103X", "RPPS must be 11 digits: character 11 'X' is not a digit"),
        ("10O03461034", "RPPS must be 11 digits: character 3 'O' is not a digit"),
        ("1000346103\u0664", "RPPS must be 11 digits: character 11 '\u0664' is not a digit"),
        ("1000346103²", "RPPS must be 11 digits: character 11 '²' is not a digit"),
        ("1000 3461034", "RPPS must not contain whitespace: character 5 is ' '"),
        ("10003\t461034", "RPPS must not contain whitespace: character 6 is '\\t'"),
        ("10003461035", "RPPS check digit is 5, expected 4 (Luhn)"),
        ("10100000000", "RPPS check digit is 0, expected 8 (Luhn)"),
    ],
)
def test_rpps_invalid(value: str, reason: str) -> None:
    assert check_rpps(value) == reason
    with pytest.raises(InvalidIdentifier) as info:
        validate_rpps(value)
    assert (info.value.kind, info.value.reason) == ("RPPS", reason)


@given(digit_strings(10))
def test_rpps_body_plus_luhn_digit_validates(body: str) -> None:
    value = body + str(ref_luhn_digit(body))
    assert check_rpps(value) is None
    assert validate_rpps(value) == value


@given(digit_strings(10))
def test_rpps_every_single_digit_alteration_is_rejected(body: str) -> None:
    valid = body + str(ref_luhn_digit(body))
    for pos in range(11):
        for d in "0123456789":
            if d == valid[pos]:
                continue
            altered = valid[:pos] + d + valid[pos + 1 :]
            expected = ref_luhn_digit(altered[:-1])
            assert check_rpps(altered) == f"RPPS check digit is {altered[-1]}, expected {expected} (Luhn)"


# --------------------------------------------------------------------------- ADELI

VALID_ADELI = ["750000002", "123456782", "010000016", "971000120"]


@pytest.mark.parametrize("value", VALID_ADELI)
def test_adeli_valid(value: str) -> None:
    assert ref_luhn_digit(value[:-1]) == int(value[-1])
    assert check_adeli(value) is None
    assert validate_adeli(f" {value} ") == value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "ADELI is empty"),
        ("12345678", "ADELI must be 9 digits, got 8 characters"),
        ("1234567820", "ADELI must be 9 digits, got 10 characters"),
        ("12345678A", "ADELI must be 9 digits: character 9 'A' is not a digit"),
        ("12 3456782", "ADELI must not contain whitespace: character 3 is ' '"),
        ("123456783", "ADELI check digit is 3, expected 2 (Luhn)"),
    ],
)
def test_adeli_invalid(value: str, reason: str) -> None:
    assert check_adeli(value) == reason
    with pytest.raises(InvalidIdentifier) as info:
        validate_adeli(value)
    assert (info.value.kind, info.value.reason) == ("ADELI", reason)


@given(digit_strings(8))
def test_adeli_body_plus_luhn_digit_validates(body: str) -> None:
    assert check_adeli(body + str(ref_luhn_digit(body))) is None


# --------------------------------------------------------------------------- IdNatPS


@pytest.mark.parametrize(
    ("value", "parts"),
    [("810003461034", ("8", "10003461034")), ("0123456782", ("0", "123456782"))],
)
def test_idnatps_valid(value: str, parts: tuple[str, str]) -> None:
    assert check_idnatps(value) is None
    assert validate_idnatps(f"  {value}") == value
    assert split_idnatps(value) == parts


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "IdNatPS is empty"),
        ("310003461034", "IdNatPS must start with 8 (RPPS) or 0 (ADELI), got '3'"),
        ("X10003461034", "IdNatPS must start with 8 (RPPS) or 0 (ADELI), got 'X'"),
        ("8", "IdNatPS prefix '8' (RPPS): RPPS is empty"),
        ("8123456782", "IdNatPS prefix '8' (RPPS): RPPS must be 11 digits, got 9 characters"),
        ("010003461034", "IdNatPS prefix '0' (ADELI): ADELI must be 9 digits, got 11 characters"),
        ("0123456783", "IdNatPS prefix '0' (ADELI): ADELI check digit is 3, expected 2 (Luhn)"),
        (
            "81000346103A",
            "IdNatPS prefix '8' (RPPS): RPPS must be 11 digits: character 11 'A' is not a digit",
        ),
        ("8 10003461034", "IdNatPS prefix '8' (RPPS): RPPS must not contain whitespace: character 1 is ' '"),
    ],
)
def test_idnatps_invalid(value: str, reason: str) -> None:
    assert check_idnatps(value) == reason
    with pytest.raises(InvalidIdentifier) as info:
        validate_idnatps(value)
    assert (info.value.kind, info.value.reason) == ("IdNatPS", reason)
    with pytest.raises(InvalidIdentifier):
        split_idnatps(value)


@pytest.mark.parametrize(
    ("id_type", "ident", "expected"),
    [
        ("8", "10003461034", "810003461034"),
        ("RPPS", "10003461034", "810003461034"),
        ("0", "123456782", "0123456782"),
        ("ADELI", " 123456782 ", "0123456782"),
    ],
)
def test_idnatps_from(id_type: str, ident: str, expected: str) -> None:
    assert idnatps_from(id_type, ident) == expected
    assert split_idnatps(expected)[1] == ident.strip()


def test_idnatps_from_rejects_unknown_type_and_bad_identifier() -> None:
    with pytest.raises(InvalidIdentifier) as info:
        idnatps_from("3", "10003461034")
    assert str(info.value) == "invalid IdNatPS type '3': expected 8 (RPPS) or 0 (ADELI)"
    with pytest.raises(InvalidIdentifier) as info:
        idnatps_from("RPPS", "10003461033")
    assert (info.value.kind, info.value.reason) == ("RPPS", "RPPS check digit is 3, expected 4 (Luhn)")
    with pytest.raises(InvalidIdentifier) as info:
        idnatps_from("ADELI", "10003461034")
    assert (info.value.kind, info.value.reason) == ("ADELI", "ADELI must be 9 digits, got 11 characters")


# --------------------------------------------------------------------------- FINESS


@pytest.mark.parametrize(
    "value",
    ["750712184", "010780195", "2A0000123", "2B0000123", "971000000", "980000005", "750712180"],
)
def test_finess_valid_shapes(value: str) -> None:
    # 750712180 has a wrong Luhn digit: only the shape is checked (see the module notes).
    assert check_finess(value) is None
    assert validate_finess(f"\t{value} ") == value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "FINESS is empty"),
        ("75071218", "FINESS must be 9 characters, got 8 characters"),
        ("7507121840", "FINESS must be 9 characters, got 10 characters"),
        ("75X712184", "FINESS must match [0-9][0-9A-Z][0-9]{7}: character 3 'X' is not a digit"),
        ("A50712184", "FINESS must match [0-9][0-9A-Z][0-9]{7}: character 1 'A' is not a digit"),
        (
            "2a0000123",
            "FINESS must match [0-9][0-9A-Z][0-9]{7}: character 2 'a' is not a digit or capital letter",
        ),
        (
            "2-0000123",
            "FINESS must match [0-9][0-9A-Z][0-9]{7}: character 2 '-' is not a digit or capital letter",
        ),
        (
            "2É0000123",
            "FINESS must match [0-9][0-9A-Z][0-9]{7}: character 2 'É' is not a digit or capital letter",
        ),
        ("20A000123", "FINESS must match [0-9][0-9A-Z][0-9]{7}: character 3 'A' is not a digit"),
        ("75071218B", "FINESS must match [0-9][0-9A-Z][0-9]{7}: character 9 'B' is not a digit"),
        ("750 712184", "FINESS must not contain whitespace: character 4 is ' '"),
    ],
)
def test_finess_invalid(value: str, reason: str) -> None:
    assert check_finess(value) == reason
    with pytest.raises(InvalidIdentifier) as info:
        validate_finess(value)
    assert (info.value.kind, info.value.reason) == ("FINESS", reason)


# --------------------------------------------------------------------------- SIREN / SIRET


@pytest.mark.parametrize("value", ["732829320", "404833048", "356000000"])
def test_siren_valid(value: str) -> None:
    assert check_siren(value) is None
    assert validate_siren(value) == value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "SIREN is empty"),
        ("732 829 320", "SIREN must not contain whitespace: character 4 is ' '"),
        ("73282932", "SIREN must be 9 digits, got 8 characters"),
        ("73282932A", "SIREN must be 9 digits: character 9 'A' is not a digit"),
        ("732829321", "SIREN check digit is 1, expected 0 (Luhn)"),
        ("404833047", "SIREN check digit is 7, expected 8 (Luhn)"),
    ],
)
def test_siren_invalid(value: str, reason: str) -> None:
    assert check_siren(value) == reason
    with pytest.raises(InvalidIdentifier) as info:
        validate_siren(value)
    assert (info.value.kind, info.value.reason) == ("SIREN", reason)


@pytest.mark.parametrize(
    "value",
    [
        "73282932000074",  # stdnum doc example
        "77220148900022",  # from ANS's public FINESS sample
        "35600000000048",  # La Poste head office: ordinary Luhn
        "35600000010000",  # La Poste establishment: digit sum 15, Luhn would fail
    ],
)
def test_siret_valid(value: str) -> None:
    assert check_siret(value) is None
    assert validate_siret(value) == value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "SIRET is empty"),
        ("7328293200007", "SIRET must be 14 digits, got 13 characters"),
        ("7328293200007A", "SIRET must be 14 digits: character 14 'A' is not a digit"),
        ("732 829 320 00074", "SIRET must not contain whitespace: character 4 is ' '"),
        ("73282932000079", "SIRET check digit is 9, expected 4 (Luhn)"),
        ("35600000000049", "SIRET of La Poste (SIREN 356000000) digit sum is 27, expected a multiple of 5"),
        ("35600000012345", "SIRET of La Poste (SIREN 356000000) digit sum is 29, expected a multiple of 5"),
        (
            "10000000000016",
            "SIRET's SIREN part 100000000 is invalid: SIREN check digit is 0, expected 9 (Luhn)",
        ),
    ],
)
def test_siret_invalid(value: str, reason: str) -> None:
    assert check_siret(value) == reason
    with pytest.raises(InvalidIdentifier) as info:
        validate_siret(value)
    assert (info.value.kind, info.value.reason) == ("SIRET", reason)


@given(digit_strings(9))
def test_siren_agrees_with_stdnum(value: str) -> None:
    assert (check_siren(value) is None) == siren.is_valid(value)


@given(st.one_of(digit_strings(14), digit_strings(5).map(lambda tail: "356000000" + tail)))
def test_siret_agrees_with_stdnum(value: str) -> None:
    assert (check_siret(value) is None) == siret.is_valid(value)


# --------------------------------------------------------------------------- structures


@pytest.mark.parametrize(
    ("type_code", "value"),
    [
        ("1", "1123456782"),
        ("3", "3750712184"),
        ("3", "32A0000123"),
        ("4", "4732829320"),
        ("5", "573282932000074"),
        ("6", "6A"),
        ("6", "6abcDEF0123456789XYZ"),
    ],
)
def test_structure_id_valid(type_code: str, value: str) -> None:
    assert check_structure_id(type_code, value) is None
    assert validate_structure_id(type_code, f" {value} ") == value


@pytest.mark.parametrize(
    ("type_code", "value", "reason"),
    [
        (
            "2",
            "2750712184",
            "unknown structure identifier type '2': expected one of 1 (Cabinet ADELI), 3 (FINESS), "
            "4 (SIREN), 5 (SIRET), 6 (Cabinet RPPS)",
        ),
        ("3", "750712184", "structure identifier of type 3 (FINESS) must start with '3', got '7'"),
        ("3", "", "structure identifier of type 3 (FINESS) must start with '3', got an empty value"),
        ("3", "3", "structure identifier of type 3 (FINESS): FINESS is empty"),
        (
            "3",
            "375X712184",
            "structure identifier of type 3 (FINESS): FINESS must match [0-9][0-9A-Z][0-9]{7}: "
            "character 3 'X' is not a digit",
        ),
        (
            "1",
            "1123456783",
            "structure identifier of type 1 (Cabinet ADELI): ADELI check digit is 3, expected 2 (Luhn)",
        ),
        (
            "4",
            "4732829321",
            "structure identifier of type 4 (SIREN): SIREN check digit is 1, expected 0 (Luhn)",
        ),
        (
            "5",
            "573282932000079",
            "structure identifier of type 5 (SIRET): SIRET check digit is 9, expected 4 (Luhn)",
        ),
        ("6", "6", "structure identifier of type 6 (Cabinet RPPS): Cabinet RPPS number is empty"),
        (
            "6",
            "6" + "A" * 21,
            "structure identifier of type 6 (Cabinet RPPS): Cabinet RPPS number must be 1 to 20 letters "
            "or digits, got 21 characters",
        ),
        (
            "6",
            "6AB-1",
            "structure identifier of type 6 (Cabinet RPPS): Cabinet RPPS number must be letters or digits: "
            "character 3 '-' is not a letter or digit",
        ),
        (
            "6",
            "6AB 1",
            "structure identifier of type 6 (Cabinet RPPS): Cabinet RPPS number must not contain "
            "whitespace: character 3 is ' '",
        ),
    ],
)
def test_structure_id_invalid(type_code: str, value: str, reason: str) -> None:
    assert check_structure_id(type_code, value) == reason
    with pytest.raises(InvalidIdentifier) as info:
        validate_structure_id(type_code, value)
    assert (info.value.kind, info.value.reason) == ("structure identifier", reason)


# --------------------------------------------------------------------------- INS

VALID_INS = [
    "253072B07300470",  # stdnum doc examples (Corsica)
    "253072A07300443",
    "295109912611193",  # stdnum doc example
    "185077512345608",  # key with a leading zero
    "100000000004797",  # body divisible by 97: key 97
    "299129999999911",
    "700010100000126",  # NIA
    "341017512345628",
]


@pytest.mark.parametrize("value", VALID_INS)
def test_ins_valid(value: str) -> None:
    assert ref_ins_key(value[:13]) == value[13:]
    assert check_ins(value) is None
    assert validate_ins(f" {value}\n") == value
    assert ins_key(value[:13]) == value[13:]


def test_ins_corsica_reads_2a_as_19_and_2b_as_18() -> None:
    assert ins_key("253072A073004") == ins_key("2530719073004") == "43"
    assert ins_key("253072B073004") == ins_key("2530718073004") == "70"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "INS is empty"),
        ("25307990730047", "INS (13 characters + 2-digit key) must be 15 characters, got 14 characters"),
        ("2530799073004700", "INS (13 characters + 2-digit key) must be 15 characters, got 16 characters"),
        ("2 95 10 99 126 111 93", "INS must not contain whitespace: character 2 is ' '"),
        ("295109912611194", "INS key is 94, expected 93 (97 - number mod 97)"),
        ("253072A07300444", "INS key is 44, expected 43 (97 - number mod 97, 2A read as 19)"),
        ("253072B07300471", "INS key is 71, expected 70 (97 - number mod 97, 2B read as 18)"),
        ("553072A07300443", "INS must start with 1, 2, 3, 4, 7 or 8 (sex or NIA), got '5'"),
        ("053072A07300443", "INS must start with 1, 2, 3, 4, 7 or 8 (sex or NIA), got '0'"),
        ("653072A07300443", "INS must start with 1, 2, 3, 4, 7 or 8 (sex or NIA), got '6'"),
        ("953072A07300443", "INS must start with 1, 2, 3, 4, 7 or 8 (sex or NIA), got '9'"),
        ("A95109912611193", "INS must start with 1, 2, 3, 4, 7 or 8 (sex or NIA), got 'A'"),
        ("253072C07300443", "INS characters 6-7 must be digits or 2A/2B (Corsica), got '2C'"),
        ("253072a07300443", "INS characters 6-7 must be digits or 2A/2B (Corsica), got '2a'"),
        ("25307A207300443", "INS characters 6-7 must be digits or 2A/2B (Corsica), got 'A2'"),
        (
            "2A3072007300443",
            "INS must be digits apart from 2A/2B at characters 6-7: character 2 'A' is not a digit",
        ),
        (
            "2530720A7300443",
            "INS must be digits apart from 2A/2B at characters 6-7: character 8 'A' is not a digit",
        ),
        (
            "25307207300442B",
            "INS must be digits apart from 2A/2B at characters 6-7: character 15 'B' is not a digit",
        ),
    ],
)
def test_ins_invalid(value: str, reason: str) -> None:
    assert check_ins(value) == reason
    with pytest.raises(InvalidIdentifier) as info:
        validate_ins(value)
    assert (info.value.kind, info.value.reason) == ("INS", reason)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("253072A07300", "INS body must be 13 characters, got 12 characters"),
        ("653072A073004", "INS must start with 1, 2, 3, 4, 7 or 8 (sex or NIA), got '6'"),
        ("25307X0073004", "INS characters 6-7 must be digits or 2A/2B (Corsica), got 'X0'"),
    ],
)
def test_ins_key_rejects_bad_body(value: str, reason: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        ins_key(value)
    assert (info.value.kind, info.value.reason) == ("INS body", reason)


@pytest.mark.parametrize(
    ("raw", "compact"),
    [
        ("2 95 10 99 126 111 93", "295109912611193"),
        ("2.53.07.2a.073.004.43", "253072A07300443"),
        ("\u00a02\u202f53 07 2B 073 004 70 ", "253072B07300470"),
    ],
)
def test_compact_ins(raw: str, compact: str) -> None:
    assert compact_ins(raw) == compact
    assert check_ins(compact_ins(raw)) is None


INS_BODIES = st.builds(
    lambda first, middle, dept, rest: first + middle + dept + rest,
    st.sampled_from("123478"),
    digit_strings(4),
    st.one_of(digit_strings(2), st.sampled_from(["2A", "2B"])),
    digit_strings(6),
)


@given(INS_BODIES)
def test_ins_body_plus_key_validates(body: str) -> None:
    assert ins_key(body) == ref_ins_key(body)
    value = body + ins_key(body)
    assert check_ins(value) is None
    assert validate_ins(value) == value


@given(INS_BODIES, st.integers(min_value=0, max_value=99))
def test_ins_wrong_key_is_rejected(body: str, key: int) -> None:
    expected = ref_ins_key(body)
    value = f"{body}{key:02d}"
    reason = check_ins(value)
    if value[13:] == expected:
        assert reason is None
    else:
        assert reason is not None
        assert reason.startswith(f"INS key is {key:02d}, expected {expected} (97 - number mod 97")


@given(st.text(alphabet="0123456789AB", min_size=15, max_size=15))
def test_ins_agrees_with_stdnum_nir(value: str) -> None:
    assert (check_ins(value) is None) == (nir.is_valid(value) and value[0] in "123478")
