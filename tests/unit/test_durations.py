"""Durations: every accepted form, every refused form and its message, and round trips."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_troupe.actors.core.durations import ACCEPTED_FORM, MAX_DURATION, UNITS, format_duration, parse_duration

DAY = 86400.0


def test_max_duration_is_365_days() -> None:
    assert MAX_DURATION == 365 * DAY
    assert "at most 365d" in ACCEPTED_FORM
    assert "90s, 30m, 12h or 7d" in ACCEPTED_FORM


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("30m", 1800.0),
        ("12h", 43200.0),
        ("7d", 7 * DAY),
        ("1.5h", 5400.0),
        ("0.5s", 0.5),
        ("2.25m", 135.0),
        ("0.5d", DAY / 2),
        ("0s", 0.0),
        ("0m", 0.0),
        ("0.0h", 0.0),
        ("007s", 7.0),
        ("1s", 1.0),
        ("365d", MAX_DURATION),
        ("8760h", MAX_DURATION),
        ("525600m", MAX_DURATION),
        ("31536000s", MAX_DURATION),
        ("364.5d", 364.5 * DAY),
    ],
)
def test_accepted(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        # empty
        ("", "it is empty"),
        # negative
        ("-5s", "cannot be negative"),
        ("-0s", "cannot be negative"),
        ("-1.5h", "cannot be negative"),
        # not a number
        ("abc", "there is no number"),
        ("s", "there is no number"),
        ("d", "there is no number"),
        ("five s", "whitespace"),
        ("5s5", "'5s5' is not a number"),
        ("1.2.3s", "'1.2.3' is not a number"),
        ("$5s", "'$5' is not a number"),
        # numbers not written as plain digits
        ("+5s", "plain digits"),
        (".5s", "plain digits"),
        ("5.s", "plain digits"),
        ("1e3s", "plain digits"),
        ("1_000s", "plain digits"),
        ("\u0663s", "plain digits"),  # an Arabic-Indic three: float() takes it, we do not
        # whitespace
        (" 5s", "whitespace"),
        ("5s ", "whitespace"),
        ("5 s", "whitespace"),
        ("5s\n", "whitespace"),
        # missing or unknown unit
        ("5", "the unit is missing"),
        ("1.5", "the unit is missing"),
        ("5x", "unknown unit 'x'"),
        ("5S", "unknown unit 'S'"),
        ("5ms", "unknown unit 'ms'"),
        ("5sec", "unknown unit 'sec'"),
        ("5w", "unknown unit 'w'"),
        ("5y", "unknown unit 'y'"),
        # overflowing values
        ("1e400d", "too large"),
        ("9" * 400 + "d", "too large"),
        ("99999999999999999999d", "longer than 365 days"),
        # NaN and infinity
        ("nans", "NaN and infinity"),
        ("NaNd", "NaN and infinity"),
        ("infs", "NaN and infinity"),
        ("infinityd", "NaN and infinity"),
        ("-infh", "NaN and infinity"),
        ("+infm", "NaN and infinity"),
        ("inf", "NaN and infinity"),
        # over 365 days
        ("366d", "longer than 365 days"),
        ("365.5d", "longer than 365 days"),
        ("8761h", "longer than 365 days"),
        ("31536001s", "longer than 365 days"),
    ],
)
def test_refused(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    message = str(caught.value)
    assert ACCEPTED_FORM in message
    assert reason in message


def test_a_long_refused_text_is_cut_short_in_the_message() -> None:
    with pytest.raises(ValueError, match=r"\.\.\. \(5001 characters\)") as caught:
        parse_duration("x" * 5000 + "s")
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.9, "0s"),
        (45, "45s"),
        (59.99, "59s"),
        (60, "1m"),
        (12 * 60 + 59, "12m"),
        (3 * 3600, "3h"),
        (DAY - 1, "23h"),
        (2 * DAY, "2d"),
        (MAX_DURATION, "365d"),
        (1000 * DAY, "1000d"),
        (-1, "-"),
        (math.nan, "-"),
        (math.inf, "-"),
    ],
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def _largest_count(unit: str) -> int:
    return int(MAX_DURATION // UNITS[unit])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(UNITS)).flatmap(lambda u: st.tuples(st.integers(0, _largest_count(u)), st.just(u))))
def test_integers_parse_to_their_seconds(case: tuple[int, str]) -> None:
    count, unit = case
    assert parse_duration(f"{count}{unit}") == count * UNITS[unit]


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=0, max_value=MAX_DURATION))
def test_format_round_trips_to_the_same_unit_rounded_down(seconds: float) -> None:
    text = format_duration(seconds)
    back = parse_duration(text)
    assert back <= seconds < back + UNITS[text[-1]]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([("s", 59), ("m", 59), ("h", 23), ("d", 365)]).flatmap(
        lambda unit_top: st.tuples(st.integers(1, unit_top[1]), st.just(unit_top[0]))
    )
)
def test_canonical_text_round_trips_exactly(case: tuple[int, str]) -> None:
    count, unit = case
    assert format_duration(parse_duration(f"{count}{unit}")) == f"{count}{unit}"


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=30) | st.from_regex(r"\A-?[0-9.e+_]{0,12}[a-zA-Z]{0,3}\Z"))
def test_any_text_is_a_bounded_duration_or_a_refusal_naming_the_form(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        assert ACCEPTED_FORM in str(exc)
    else:
        assert 0 <= seconds <= MAX_DURATION
        assert text[-1] in UNITS
