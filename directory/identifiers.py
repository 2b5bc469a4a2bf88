"""Implementation notes

Validation of French health identifiers, each invalid value getting a precise, English reason.

Shape of the API: every identifier ``x`` has ``check_x(s) -> str | None`` (``None`` when valid,
else the reason) and ``validate_x(s) -> str`` (the normalised value, or raises
:class:`InvalidIdentifier` carrying that same reason). ``check_x`` is the cheap form for the
directory-import hot path: the happy path builds no exception and compiles no regex; reasons
(and expected check digits) are only computed once a value has failed.

Normalisation: surrounding whitespace is stripped and nothing else. Internal whitespace is
refused with its own reason (the import must not guess); :func:`compact_ins` is the lenient
helper for human input. Character positions in reasons are 1-based, counted in the stripped
value (for IdNatPS and structure identifiers: in the part named by the reason).

Rules and where they come from:

- RPPS: exactly 11 digits, the last one a Luhn check digit over the whole number (project
  domain brief; Luhn arithmetic from ``stdnum.luhn``). The brief's example RPPS 10003461033
  is NOT Luhn-valid (Luhn checksum 9; the check digit for 1000346103 is 4, i.e. 10003461034).
- ADELI: exactly 9 digits; we apply the rule "the 9th digit is a Luhn check digit over the 9
  digits" as stated by the project domain brief. It could not be confirmed from a public
  source; ``stdnum.luhn`` does the arithmetic.
- IdNatPS (OID 1.2.250.1.71.4.2.1): type code + identifier, ``8`` + RPPS (12 characters) or
  ``0`` + ADELI (10 characters); the identifier is validated with its own rule. Other type
  codes exist in the wider trust space but are out of scope here and are refused.
- Structure national identification: type code + identifier, ``1`` cabinet ADELI (ADELI
  rule), ``3`` FINESS, ``4`` SIREN, ``5`` SIRET, ``6`` cabinet RPPS (1 to 20 ASCII letters or
  digits, shape only).
- FINESS: 9 characters ``[0-9][0-9A-Z][0-9]{7}`` (Corsica 2A/2B, overseas 97x/98x). SHAPE
  ONLY: no public statement of a FINESS check-digit rule (nor of its Corsican variant) was
  found, so no key is checked. Observation for whoever revisits this: the 14 numeric FINESS
  numbers in ANS's public sample (github ansforge/finess, flux/out/data.gouv/structure) plus
  750712184 all pass Luhn over the 9 digits; that is evidence, not a documented rule.
- SIREN: 9 digits + Luhn, exactly ``stdnum.fr.siren.validate`` (stdnum doc example
  732829320). SIRET: 14 digits + Luhn over the 14 digits and a valid SIREN part, with La
  Poste's exception (SIREN 356000000 except head office 35600000000048: digit sum multiple
  of 5), decided by ``stdnum.fr.siret`` (doc example 73282932000074). The hot path runs
  ``stdnum.luhn`` directly (``siret.validate`` costs ~15 us through its cleaning step); the
  tests check equivalence with ``stdnum.fr.siren/siret.is_valid``.
- INS (NIR or NIA, patient national health identifier): 13 characters + 2-digit key, key =
  97 - (first 13 as a number mod 97), Corsican department 2A read as 19 and 2B as 18
  (``stdnum.fr.nir.calc_check_digits``; doc examples 253072B07300470, 253072A07300443).
  First character: 1/2 (sex), 3/4 (provisional, some foreign-born) or 7/8 (NIA); others
  are refused. Characters 6-7 are digits or 2A/2B; all others are digits.
- OIDs: IdNatPS 1.2.250.1.71.4.2.1; INS-NIR 1.2.250.1.213.1.4.8, INS-NIA
  1.2.250.1.213.1.4.9, test NIR 1.2.250.1.213.1.4.10, test NIA 1.2.250.1.213.1.4.11.
"""

from __future__ import annotations

from datetime import date
from typing import Final

from stdnum import luhn
from stdnum.fr import nir, siret

__all__ = [
    "IDNATPS_OID",
    "INS_NIA_OID",
    "INS_NIA_TEST_OID",
    "INS_NIR_OID",
    "INS_NIR_TEST_OID",
    "PP_ID_TYPES",
    "STRUCTURE_ID_TYPES",
    "InvalidIdentifier",
    "check_adeli",
    "check_finess",
    "check_idnatps",
    "check_ins",
    "check_rpps",
    "check_siren",
    "check_siret",
    "check_structure_id",
    "compact_ins",
    "idnatps_from",
    "ins_key",
    "split_idnatps",
    "validate_adeli",
    "validate_finess",
    "validate_idnatps",
    "validate_ins",
    "validate_rpps",
    "validate_siren",
    "validate_siret",
    "validate_structure_id",
]

IDNATPS_OID: Final = "1.2.250.1.71.4.2.1"
INS_NIR_OID: Final = "1.2.250.1.213.1.4.8"
INS_NIA_OID: Final = "1.2.250.1.213.1.4.9"
INS_NIR_TEST_OID: Final = "1.2.250.1.213.1.4.10"
INS_NIA_TEST_OID: Final = "1.2.250.1.213.1.4.11"

# IdNatPS type code -> identifier kind.
PP_ID_TYPES: Final[dict[str, str]] = {"0": "ADELI", "8": "RPPS"}
# Structure identification type code -> French label.
STRUCTURE_ID_TYPES: Final[dict[str, str]] = {
    "1": "Cabinet ADELI",
    "3": "FINESS",
    "4": "SIREN",
    "5": "SIRET",
    "6": "Cabinet RPPS",
}

_PP_LABEL_TO_CODE: Final[dict[str, str]] = {label: code for code, label in PP_ID_TYPES.items()}
_PP_TYPES_TEXT: Final = " or ".join(f"{code} ({label})" for code, label in sorted(PP_ID_TYPES.items(), reverse=True))
_STRUCTURE_TYPES_TEXT: Final = ", ".join(f"{code} ({label})" for code, label in STRUCTURE_ID_TYPES.items())

_FINESS_SHAPE: Final = "[0-9][0-9A-Z][0-9]{7}"
_UPPER: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_INS_FIRST: Final = frozenset("123478")
_LA_POSTE_SIREN: Final = "356000000"
_CABINET_RPPS_MAX: Final = 20
# Removed by compact_ins: space, dot, no-break space, narrow no-break space (French formatting).
_INS_SEPARATORS: Final = {ord(c): None for c in " .\u00a0\u202f"}


class InvalidIdentifier(ValueError):
    """An identifier failed validation; ``reason`` says precisely why."""

    kind: str
    value: str
    reason: str

    def __init__(self, kind: str, value: str, reason: str) -> None:
        super().__init__(f"invalid {kind} {value!r}: {reason}")
        self.kind = kind
        self.value = value
        self.reason = reason

    def __reduce__(self) -> tuple[type[InvalidIdentifier], tuple[str, str, str]]:
        # Keep the exception picklable (multiprocessing imports) despite the 3-argument __init__.
        return (type(self), (self.kind, self.value, self.reason))


# --------------------------------------------------------------------------- helpers


def _is_digits(s: str) -> bool:
    # str.isdigit alone accepts e.g. '²' or Arabic-Indic digits; restricted to ASCII it is [0-9].
    return s.isascii() and s.isdigit()


def _whitespace_reason(kind: str, s: str) -> str | None:
    for i, c in enumerate(s, 1):
        if c.isspace():
            return f"{kind} must not contain whitespace: character {i} is {c!r}"
    return None


def _digits_reason(kind: str, s: str, length: int) -> str | None:
    """Reason why ``s`` (stripped) is not exactly ``length`` ASCII digits, else None."""
    if len(s) == length and _is_digits(s):
        return None
    if not s:
        return f"{kind} is empty"
    ws = _whitespace_reason(kind, s)
    if ws is not None:
        return ws
    if len(s) != length:
        return f"{kind} must be {length} digits, got {len(s)} characters"
    for i, c in enumerate(s, 1):
        if not ("0" <= c <= "9"):
            return f"{kind} must be {length} digits: character {i} {c!r} is not a digit"
    raise AssertionError("unreachable")  # pragma: no cover


def _luhn_reason(kind: str, s: str) -> str | None:
    """``s`` is all ASCII digits; reason if its last digit is not the Luhn check digit."""
    if luhn.checksum(s) == 0:
        return None
    return f"{kind} check digit is {s[-1]}, expected {luhn.calc_check_digit(s[:-1])} (Luhn)"


def _raise_if(kind: str, value: str, reason: str | None) -> str:
    if reason is not None:
        raise InvalidIdentifier(kind, value, reason)
    return value


# --------------------------------------------------------------------------- RPPS / ADELI


def _rpps_reason(s: str) -> str | None:
    return _digits_reason("RPPS", s, 11) or _luhn_reason("RPPS", s)


def _adeli_reason(s: str) -> str | None:
    # Rule applied (from the project domain brief, not confirmed by a public source):
    # 9 digits, the 9th being a Luhn check digit over the 9 digits.
    return _digits_reason("ADELI", s, 9) or _luhn_reason("ADELI", s)


def check_rpps(s: str) -> str | None:
    """None if ``s`` is a valid RPPS number, else the reason."""
    return _rpps_reason(s.strip())


def validate_rpps(s: str) -> str:
    """Return the normalised RPPS number or raise InvalidIdentifier."""
    v = s.strip()
    return _raise_if("RPPS", v, _rpps_reason(v))


def check_adeli(s: str) -> str | None:
    """None if ``s`` is a valid ADELI number, else the reason."""
    return _adeli_reason(s.strip())


def validate_adeli(s: str) -> str:
    """Return the normalised ADELI number or raise InvalidIdentifier."""
    v = s.strip()
    return _raise_if("ADELI", v, _adeli_reason(v))


# --------------------------------------------------------------------------- IdNatPS

_PP_REASONS: Final = {"8": _rpps_reason, "0": _adeli_reason}


def _idnatps_reason(s: str) -> str | None:
    if not s:
        return "IdNatPS is empty"
    check = _PP_REASONS.get(s[0])
    if check is None:
        return f"IdNatPS must start with {_PP_TYPES_TEXT}, got {s[0]!r}"
    inner = check(s[1:])
    if inner is None:
        return None
    return f"IdNatPS prefix {s[0]!r} ({PP_ID_TYPES[s[0]]}): {inner}"


def check_idnatps(s: str) -> str | None:
    """None if ``s`` is a valid IdNatPS (``8`` + RPPS or ``0`` + ADELI), else the reason."""
    return _idnatps_reason(s.strip())


def validate_idnatps(s: str) -> str:
    """Return the normalised IdNatPS or raise InvalidIdentifier."""
    v = s.strip()
    return _raise_if("IdNatPS", v, _idnatps_reason(v))


def split_idnatps(s: str) -> tuple[str, str]:
    """Validate an IdNatPS and return (type code, identifier), e.g. ('8', '10003461034')."""
    v = validate_idnatps(s)
    return v[0], v[1:]


def idnatps_from(id_type: str, ident: str) -> str:
    """Build the IdNatPS from a type (code '8'/'0' or label 'RPPS'/'ADELI') and an identifier.

    The identifier is validated with its own rule (InvalidIdentifier of that kind); an unknown
    type raises InvalidIdentifier of kind 'IdNatPS type'.
    """
    code = id_type.strip()
    code = _PP_LABEL_TO_CODE.get(code, code)
    check = _PP_REASONS.get(code)
    if check is None:
        raise InvalidIdentifier("IdNatPS type", id_type, f"expected {_PP_TYPES_TEXT}")
    v = ident.strip()
    return code + _raise_if(PP_ID_TYPES[code], v, check(v))


# --------------------------------------------------------------------------- FINESS


def _finess_reason(s: str) -> str | None:
    if (
        len(s) == 9
        and "0" <= s[0] <= "9"
        and ("0" <= s[1] <= "9" or s[1] in _UPPER)
        and s[2:].isascii()
        and s[2:].isdigit()
    ):
        # Shape only: see "Implementation notes" (no public FINESS check-digit rule found).
        return None
    if not s:
        return "FINESS is empty"
    ws = _whitespace_reason("FINESS", s)
    if ws is not None:
        return ws
    if len(s) != 9:
        return f"FINESS must be 9 characters, got {len(s)} characters"
    for i, c in enumerate(s, 1):
        if i == 2:
            if not ("0" <= c <= "9" or c in _UPPER):
                return f"FINESS must match {_FINESS_SHAPE}: character 2 {c!r} is not a digit or capital letter"
        elif not ("0" <= c <= "9"):
            return f"FINESS must match {_FINESS_SHAPE}: character {i} {c!r} is not a digit"
    raise AssertionError("unreachable")  # pragma: no cover


def check_finess(s: str) -> str | None:
    """None if ``s`` has the FINESS shape (no check digit verified), else the reason."""
    return _finess_reason(s.strip())


def validate_finess(s: str) -> str:
    """Return the normalised FINESS number or raise InvalidIdentifier (shape only)."""
    v = s.strip()
    return _raise_if("FINESS", v, _finess_reason(v))


# --------------------------------------------------------------------------- SIREN / SIRET


def _siren_reason(s: str) -> str | None:
    # Same rule as stdnum.fr.siren.validate (digits, length 9, luhn.validate) without its
    # cleaning step; equivalence is property-tested.
    return _digits_reason("SIREN", s, 9) or _luhn_reason("SIREN", s)


def _siret_reason(s: str) -> str | None:
    shape = _digits_reason("SIRET", s, 14)
    if shape is not None:
        return shape
    if not s.startswith(_LA_POSTE_SIREN) and luhn.checksum(s) == 0 and luhn.checksum(s[:9]) == 0:
        return None  # hot path: the ordinary Luhn rule, as stdnum.fr.siret applies it
    if siret.is_valid(s):
        return None  # stdnum decides the La Poste exception
    if s.startswith(_LA_POSTE_SIREN) and s != "35600000000048":
        total = sum(map(int, s))
        return f"SIRET of La Poste (SIREN {_LA_POSTE_SIREN}) digit sum is {total}, expected a multiple of 5"
    luhn_reason = _luhn_reason("SIRET", s)
    if luhn_reason is not None:
        return luhn_reason
    return f"SIRET's SIREN part {s[:9]} is invalid: {_siren_reason(s[:9])}"


def check_siren(s: str) -> str | None:
    """None if ``s`` is a valid SIREN, else the reason."""
    return _siren_reason(s.strip())


def validate_siren(s: str) -> str:
    """Return the normalised SIREN or raise InvalidIdentifier."""
    v = s.strip()
    return _raise_if("SIREN", v, _siren_reason(v))


def check_siret(s: str) -> str | None:
    """None if ``s`` is a valid SIRET (including La Poste's exception), else the reason."""
    return _siret_reason(s.strip())


def validate_siret(s: str) -> str:
    """Return the normalised SIRET or raise InvalidIdentifier."""
    v = s.strip()
    return _raise_if("SIRET", v, _siret_reason(v))


# --------------------------------------------------------------------------- structures


def _cabinet_rpps_reason(s: str) -> str | None:
    if 0 < len(s) <= _CABINET_RPPS_MAX and s.isascii() and s.isalnum():
        return None
    kind = "Cabinet RPPS number"
    if not s:
        return f"{kind} is empty"
    ws = _whitespace_reason(kind, s)
    if ws is not None:
        return ws
    if len(s) > _CABINET_RPPS_MAX:
        return f"{kind} must be 1 to {_CABINET_RPPS_MAX} letters or digits, got {len(s)} characters"
    for i, c in enumerate(s, 1):
        if not (c.isascii() and c.isalnum()):
            return f"{kind} must be letters or digits: character {i} {c!r} is not a letter or digit"
    raise AssertionError("unreachable")  # pragma: no cover


_STRUCTURE_REASONS: Final = {
    "1": _adeli_reason,
    "3": _finess_reason,
    "4": _siren_reason,
    "5": _siret_reason,
    "6": _cabinet_rpps_reason,
}


def _structure_reason(type_code: str, s: str) -> str | None:
    check = _STRUCTURE_REASONS.get(type_code)
    if check is None:
        return f"unknown structure identifier type {type_code!r}: expected one of {_STRUCTURE_TYPES_TEXT}"
    label = f"type {type_code} ({STRUCTURE_ID_TYPES[type_code]})"
    if not s.startswith(type_code):
        got = repr(s[0]) if s else "an empty value"
        return f"structure identifier of {label} must start with {type_code!r}, got {got}"
    inner = check(s[1:])
    if inner is None:
        return None
    return f"structure identifier of {label}: {inner}"


def check_structure_id(type_code: str, s: str) -> str | None:
    """None if ``s`` is a valid structure identification of type ``type_code``, else the reason."""
    return _structure_reason(type_code.strip(), s.strip())


def validate_structure_id(type_code: str, s: str) -> str:
    """Return the normalised structure identification (type code + id) or raise InvalidIdentifier."""
    v = s.strip()
    return _raise_if("structure identifier", v, _structure_reason(type_code.strip(), v))


# --------------------------------------------------------------------------- INS (NIR / NIA)


def _ins_body_reason(s: str, length: int) -> str | None:
    """Shape of the first 13 characters (``s`` has ``length`` characters, 13 or 15)."""
    first = s[0]
    if first not in _INS_FIRST:
        return f"INS must start with 1, 2, 3, 4, 7 or 8 (sex or NIA), got {first!r}"
    dept = s[5:7]
    if not (_is_digits(dept) or dept == "2A" or dept == "2B"):
        return f"INS characters 6-7 must be digits or 2A/2B (Corsica), got {dept!r}"
    for i in (*range(2, 6), *range(8, length + 1)):
        c = s[i - 1]
        if not ("0" <= c <= "9"):
            return f"INS must be digits apart from 2A/2B at characters 6-7: character {i} {c!r} is not a digit"
    return None


def _ins_shape_reason(s: str, length: int, what: str) -> str | None:
    if not s:
        return "INS is empty"
    ws = _whitespace_reason("INS", s)
    if ws is not None:
        return ws
    if len(s) != length:
        return f"INS {what} must be {length} characters, got {len(s)} characters"
    return _ins_body_reason(s, length)


def _ins_reason(s: str) -> str | None:
    if len(s) == 15 and s[0] in _INS_FIRST and s.isascii():
        dept = s[5:7]
        if (
            s[1:5].isdigit()
            and s[7:].isdigit()
            and (dept.isdigit() or dept == "2A" or dept == "2B")
            and nir.calc_check_digits(s) == s[13:]
        ):
            return None
    shape = _ins_shape_reason(s, 15, "(13 characters + 2-digit key)")
    if shape is not None:
        return shape
    expected = nir.calc_check_digits(s)
    how = "97 - number mod 97"
    if s[5:7] == "2A":
        how += ", 2A read as 19"
    elif s[5:7] == "2B":
        how += ", 2B read as 18"
    return f"INS key is {s[13:]}, expected {expected} ({how})"


def ins_key(first13: str) -> str:
    """The 2-digit INS key for the first 13 characters (2A/2B handled); raises InvalidIdentifier."""
    v = first13.strip()
    reason = _ins_shape_reason(v, 13, "body")
    if reason is not None:
        raise InvalidIdentifier("INS body", v, reason)
    return str(nir.calc_check_digits(v))


def check_ins(s: str) -> str | None:
    """None if ``s`` is a valid INS (NIR or NIA, 15 characters), else the reason."""
    return _ins_reason(s.strip())


def validate_ins(s: str) -> str:
    """Return the normalised INS or raise InvalidIdentifier."""
    v = s.strip()
    return _raise_if("INS", v, _ins_reason(v))


def compact_ins(s: str) -> str:
    """Human input: drop spaces, dots and (narrow) no-break spaces, uppercase ('2a' -> '2A').

    Not used on the import path, which refuses internal whitespace. No validation is done.
    """
    return s.translate(_INS_SEPARATORS).strip().upper()


# Sex digit of a NIR/NIA (first character): 1, 3, 7 men; 2, 4, 8 women (3/4 temporary NIRs, 7/8 NIA).
_INS_SEX: Final = {"1": "M", "3": "M", "7": "M", "2": "F", "4": "F", "8": "F"}


def check_ins_traits(ins: str, *, sex: str, birth_date: str) -> str | None:
    """None if the INS agrees with the identity traits, else the reason.

    The matricule encodes the sex (character 1), the year (characters 2-3) and, when it is 01 to 12, the
    month of birth (characters 4-5; other values stand for an unknown month). `birth_date` is ISO 8601.
    """
    ins = ins.strip()  # as check_ins reads it
    reason = check_ins(ins)
    if reason is not None:
        return reason
    if sex not in ("M", "F"):
        return f"sex must be M or F, got {sex!r}"
    if _INS_SEX[ins[0]] != sex:
        return f"the INS starts with {ins[0]} ({'man' if _INS_SEX[ins[0]] == 'M' else 'woman'}), the sex given is {sex}"
    try:
        born: date | None = date.fromisoformat(birth_date)
    except ValueError:
        born = None
    if born is None or born.isoformat() != birth_date:  # Python 3.11 also reads 19850314 and 1985-W11-4
        return f"birth date {birth_date!r} is not a date (YYYY-MM-DD)"
    if ins[1:3] != f"{born.year % 100:02d}":
        return f"the INS says born in ..{ins[1:3]}, the birth date is {birth_date}"
    month = int(ins[3:5])
    if 1 <= month <= 12 and month != born.month:
        return f"the INS says born in month {ins[3:5]}, the birth date is {birth_date}"
    return None
