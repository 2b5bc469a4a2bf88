"""Patients' identifiers: the INS checked against the identity traits, and patient addresses (domain brief §2)."""

from __future__ import annotations

import pytest

from directory.addresses import is_patient_address, patient_address
from directory.identifiers import check_ins_traits, ins_key

MAN_1985_03 = "185037512345641"
WOMAN_1992_06 = "292069912345618"
CORSICA_WOMAN_1985_03 = "285032A12345648"
NIA_MAN_1985_03 = "785037512345632"
NIA_WOMAN_1992_06 = "892067512345675"
UNKNOWN_MONTH_1985 = "185997512345625"  # month 99: unknown
PAT = "patient.ch-test.mssante.fr"


def test_vectors_are_valid_ins() -> None:
    for ins in (MAN_1985_03, WOMAN_1992_06, CORSICA_WOMAN_1985_03, NIA_MAN_1985_03, NIA_WOMAN_1992_06):
        assert ins_key(ins[:13]) == ins[13:], ins
    assert ins_key(UNKNOWN_MONTH_1985[:13]) == UNKNOWN_MONTH_1985[13:]


@pytest.mark.parametrize(
    ("ins", "sex", "birth_date"),
    [
        (MAN_1985_03, "M", "1985-03-14"),
        (MAN_1985_03, "M", "1885-03-01"),  # two digits of the year only
        (WOMAN_1992_06, "F", "1992-06-30"),
        (CORSICA_WOMAN_1985_03, "F", "1985-03-02"),
        (NIA_MAN_1985_03, "M", "1985-03-31"),
        (NIA_WOMAN_1992_06, "F", "1992-06-01"),
        (UNKNOWN_MONTH_1985, "M", "1985-11-05"),
        ("3" + "850375123456" + ins_key("3850375123456"), "M", "1985-03-14"),  # temporary NIR, a man
        ("4" + "850375123456" + ins_key("4850375123456"), "F", "1985-03-14"),  # temporary NIR, a woman
        (f" {MAN_1985_03}\n", "M", "1985-03-14"),  # surrounding whitespace, as check_ins reads it
    ],
)
def test_traits_that_agree(ins: str, sex: str, birth_date: str) -> None:
    assert check_ins_traits(ins, sex=sex, birth_date=birth_date) is None


@pytest.mark.parametrize(
    ("ins", "sex", "birth_date", "reason"),
    [
        (MAN_1985_03[:13] + "42", "M", "1985-03-14", "INS key is 42, expected 41 (97 - number mod 97)"),
        (
            "18503751234564",
            "M",
            "1985-03-14",
            "INS (13 characters + 2-digit key) must be 15 characters, got 14 characters",
        ),
        (MAN_1985_03, "X", "1985-03-14", "sex must be M or F, got 'X'"),
        (MAN_1985_03, "m", "1985-03-14", "sex must be M or F, got 'm'"),  # the CLI upper-cases first
        (MAN_1985_03, "F", "1985-03-14", "the INS starts with 1 (man), the sex given is F"),
        (WOMAN_1992_06, "M", "1992-06-30", "the INS starts with 2 (woman), the sex given is M"),
        (NIA_MAN_1985_03, "F", "1985-03-14", "the INS starts with 7 (man), the sex given is F"),
        (NIA_WOMAN_1992_06, "M", "1992-06-14", "the INS starts with 8 (woman), the sex given is M"),
        (MAN_1985_03, "M", "14/03/1985", "birth date '14/03/1985' is not a date (YYYY-MM-DD)"),
        (MAN_1985_03, "M", "1985-02-30", "birth date '1985-02-30' is not a date (YYYY-MM-DD)"),
        (MAN_1985_03, "M", "1985-3-14", "birth date '1985-3-14' is not a date (YYYY-MM-DD)"),
        (MAN_1985_03, "M", "", "birth date '' is not a date (YYYY-MM-DD)"),
        # Python 3.11's fromisoformat reads these too: they are not the YYYY-MM-DD the store keeps.
        (MAN_1985_03, "M", "19850314", "birth date '19850314' is not a date (YYYY-MM-DD)"),
        (MAN_1985_03, "M", "1985-W11-4", "birth date '1985-W11-4' is not a date (YYYY-MM-DD)"),
        (MAN_1985_03, "M", "1986-03-14", "the INS says born in ..85, the birth date is 1986-03-14"),
        (MAN_1985_03, "M", "2085-04-14", "the INS says born in month 03, the birth date is 2085-04-14"),
        (WOMAN_1992_06, "F", "1992-07-01", "the INS says born in month 06, the birth date is 1992-07-01"),
    ],
)
def test_traits_that_disagree(ins: str, sex: str, birth_date: str, reason: str) -> None:
    assert check_ins_traits(ins, sex=sex, birth_date=birth_date) == reason


def test_sex_is_checked_before_the_birth_date() -> None:
    assert check_ins_traits(MAN_1985_03, sex="F", birth_date="nonsense") == (
        "the INS starts with 1 (man), the sex given is F"
    )


# -- addresses -----------------------------------------------------------------------------------------


def test_patient_address_is_the_ins_at_the_patient_domain_lower_cased() -> None:
    assert patient_address(MAN_1985_03, PAT) == f"{MAN_1985_03}@{PAT}"
    assert patient_address(CORSICA_WOMAN_1985_03, "Patient.CH-Test.mssante.fr") == f"285032a12345648@{PAT}"


@pytest.mark.parametrize(
    "address",
    [
        f"{MAN_1985_03}@{PAT}",
        f"{MAN_1985_03}@PATIENT.CH-TEST.MSSANTE.FR",
        f"{MAN_1985_03}@patient.mssante.fr",  # the national patient domain
        f"{NIA_WOMAN_1992_06}@patient.clinique-b.mssante.fr",  # another operator's patient
        f"285032a12345648@{PAT}",  # Corsica, lower-cased as patient_address writes it
        f"{CORSICA_WOMAN_1985_03}@{PAT}",
        f"  {MAN_1985_03}@{PAT}\t",
    ],
)
def test_patient_addresses(address: str) -> None:
    assert is_patient_address(address) is True


@pytest.mark.parametrize(
    "address",
    [
        f"{MAN_1985_03[:13]}42@{PAT}",  # bad key
        f"{MAN_1985_03[:14]}@{PAT}",  # 14 characters
        f"{MAN_1985_03}0@{PAT}",  # 16 characters
        f"{MAN_1985_03}@ch-test.mssante.fr",  # not a patient domain
        f"{MAN_1985_03}@patientele.ch-test.mssante.fr",
        f"{MAN_1985_03}@patient",  # no label after patient
        f"{MAN_1985_03}@sub.patient.ch-test.mssante.fr",  # `patient` must be the first label
        f"claire.martin@{PAT}",
        f"553072A07300443@{PAT}",  # a 5 is no sex
        MAN_1985_03,
        "",
        "@",
    ],
)
def test_not_patient_addresses(address: str) -> None:
    assert is_patient_address(address) is False
