"""Which numbers POST /calls may dial: an allow-list of regions and E.164 prefixes, checked with phonenumbers.

Premium-rate, shared-cost, personal, UAN and unknown numbers are refused whatever the allow-list says:
they are how toll fraud turns a leaked key into money.
"""

from __future__ import annotations

import phonenumbers
from phonenumbers import PhoneNumberType

ALLOWED_TYPES = frozenset(
    {
        PhoneNumberType.FIXED_LINE,
        PhoneNumberType.MOBILE,
        PhoneNumberType.FIXED_LINE_OR_MOBILE,
        PhoneNumberType.TOLL_FREE,
        PhoneNumberType.VOIP,
    }
)


class DestinationRefused(ValueError):
    """Why a number may not be called (safe to show the API caller)."""


class DestinationPolicy:
    """`CALL_DESTINATIONS="US,CA,+4420"`: ISO regions and/or E.164 prefixes; `*` allows every valid region."""

    def __init__(self, spec: str) -> None:
        entries = [e.strip() for e in spec.split(",") if e.strip()]
        self.prefixes = tuple(e for e in entries if e.startswith("+"))
        self.regions = frozenset(e.upper() for e in entries if not e.startswith("+"))
        bad = [r for r in self.regions if r != "*" and r not in phonenumbers.SUPPORTED_REGIONS]
        bad += [p for p in self.prefixes if not p[1:].isdigit()]
        if bad:
            raise ValueError(f"CALL_DESTINATIONS: unknown region or prefix {bad}")

    def check(self, number: str) -> str:
        """The number in E.164 if it may be called; else DestinationRefused."""
        try:
            parsed = phonenumbers.parse(number, None)
        except phonenumbers.NumberParseException as e:
            raise DestinationRefused(f"not a phone number: {e}") from e
        if not phonenumbers.is_valid_number(parsed):
            raise DestinationRefused("not a valid, assigned phone number")
        kind = phonenumbers.number_type(parsed)
        if kind not in ALLOWED_TYPES:
            raise DestinationRefused(f"numbers of type {_type_name(kind)} may not be called")
        e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
        region = phonenumbers.region_code_for_number(parsed)
        if "*" in self.regions or region in self.regions or e164.startswith(self.prefixes):
            return e164
        raise DestinationRefused(f"destination {region or 'unknown'} is not in CALL_DESTINATIONS")


def _type_name(kind: int) -> str:
    names = {v: k for k, v in vars(PhoneNumberType).items() if k.isupper()}
    return names.get(kind, str(kind)).lower()
