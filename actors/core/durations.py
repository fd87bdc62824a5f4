"""Durations written the way people type them: ``90s``, ``30m``, ``12h``, ``7d``, ``1.5h``.

`parse_duration` accepts exactly one plain number (digits, optionally a
decimal point and more digits) followed by one unit letter, and nothing else:
no sign, no exponent, no whitespace, no ``inf``/``nan``. Every refusal is a
`ValueError` that says what was wrong and shows the accepted form, so a CLI
can print it as is.

`format_duration` is the compact display form (one unit, rounded down), and
what it prints parses back.
"""

from __future__ import annotations

import math
import re
import string
from typing import Final

UNITS: Final[dict[str, int]] = {"s": 1, "m": 60, "h": 3600, "d": 86400}
"""Seconds per unit letter."""

MAX_DURATION: Final[float] = 365.0 * 86400
"""The longest duration accepted: 365 days, in seconds."""

ACCEPTED_FORM: Final = (
    "expected a duration such as 90s, 30m, 12h or 7d (a number followed by s, m, h or d, at most 365d)"
)

_ACCEPTED = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd])", re.ASCII)
_NON_FINITE = re.compile(r"[+-]?(nan|inf)", re.IGNORECASE)
_SHOWN_CHARS = 40


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (``<number><unit>``, unit one of s, m, h, d); ``ValueError`` otherwise."""
    match = _ACCEPTED.fullmatch(text)
    if match is None:
        raise _refusal(text, _diagnose(text))
    seconds = float(match[1]) * UNITS[match[2]]
    if not math.isfinite(seconds):
        raise _refusal(text, "the number is too large")
    if seconds > MAX_DURATION:
        raise _refusal(text, "that is longer than 365 days")
    return seconds


def format_duration(seconds: float) -> str:
    """``seconds`` in the largest unit that fits, rounded down: ``45s``, ``12m``, ``3h``, ``2d``.

    Negative and non-finite values (which no duration is) show as ``-``.
    """
    if not math.isfinite(seconds) or seconds < 0:
        return "-"
    for unit in ("d", "h", "m"):
        if seconds >= UNITS[unit]:
            return f"{int(seconds // UNITS[unit])}{unit}"
    return f"{int(seconds)}s"


def _refusal(text: str, reason: str) -> ValueError:
    return ValueError(f"invalid duration {_shown(text)}: {reason}; {ACCEPTED_FORM}")


def _shown(text: str) -> str:
    """``text`` quoted, cut short so a pasted megabyte does not become the message."""
    if len(text) > _SHOWN_CHARS:
        return repr(text[:_SHOWN_CHARS]) + f"... ({len(text)} characters)"
    return repr(text)


def _diagnose(text: str) -> str:
    """Why ``text``, which does not have the accepted form, was refused."""
    if not text:
        return "it is empty"
    if any(char.isspace() for char in text):
        return "it contains whitespace"
    if _NON_FINITE.match(text):
        return "NaN and infinity are not durations"
    if text.startswith("-"):
        return "a duration cannot be negative"
    number = text.rstrip(string.ascii_letters)
    unit = text[len(number) :]
    return _diagnose_number(number) or _diagnose_unit(unit)


def _diagnose_number(number: str) -> str | None:
    if not number:
        return "there is no number"
    try:
        value = float(number)
    except ValueError:
        return f"{_shown(number)} is not a number"
    if not math.isfinite(value):
        return "the number is too large"
    if not _ACCEPTED.fullmatch(number + "s"):
        return f"write the number {_shown(number)} as plain digits, such as 90 or 1.5"
    return None


def _diagnose_unit(unit: str) -> str:
    if not unit:
        return "the unit is missing"
    return f"unknown unit {_shown(unit)}"
