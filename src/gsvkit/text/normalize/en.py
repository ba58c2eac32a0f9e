"""English normalisation (numbers, money, times, units) in upstream's behaviour, with its plain mistakes fixed.

Upstream's output is matched except for these deliberate fixes (``fix_mistakes=True``, the default), because
they make a model say the wrong words:

- ``Dr. Smith`` → "Doctor Smith" (upstream's dictionary reads ``Dr.`` as "drive");
- ``1990s`` → "nineteen nineties" (upstream: "nineteen ninety seconds", the unit ``s``);
- ``3:30 pm`` → "three thirty p.m." (upstream: "three thirty a.m. pm": every hour below 12 gets a.m.);
- ``-5°C`` → "negative five degrees celsius" with the space kept (upstream: "tonegative …");
- ``1,250`` and ``$1,250`` → "one thousand, two hundred fifty" (upstream: "twelve fifty", read like a year);
- ``;`` ``:`` ``；`` ``：`` → "," (upstream's escaped regex deletes them);
- ``€7`` → "seven euros" (upstream drops the sign).

``fix_mistakes=False`` reproduces upstream exactly.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

PUNCTUATION = ("!", "?", "…", ",", ".", "-")
_PUNCT_CLASS = "".join(re.escape(p) for p in PUNCTUATION)

_MEASURES = {
    "m": ("meter", "meters"),
    "km": ("kilometer", "kilometers"),
    "km/h": ("kilometer per hour", "kilometers per hour"),
    "ft": ("feet", "feet"),
    "L": ("liter", "liters"),
    "tbsp": ("tablespoon", "tablespoons"),
    "tsp": ("teaspoon", "teaspoons"),
    "h": ("hour", "hours"),
    "min": ("minute", "minutes"),
    "s": ("second", "seconds"),
    "°C": ("degree celsius", "degrees celsius"),
    "°F": ("degree fahrenheit", "degrees fahrenheit"),
}
_ORDINAL_NUMBER = re.compile(r"\b([0-9]+)\. ")
_COMMA_NUMBER = re.compile(r"([0-9][0-9\,]+[0-9])")
_TIME = re.compile(r"\b([01]?[0-9]|2[0-3]):([0-5][0-9])\b")
_TIME_WITH_PERIOD = re.compile(r"\b([01]?[0-9]|2[0-3]):([0-5][0-9])\s*([AaPp])\.?\s?[Mm]\b\.?")
_MEASUREMENT = re.compile(r"\b([0-9]+(\.[0-9]+)?(m|km|km/h|ft|L|tbsp|tsp|h|min|s|°C|°F))\b")
_POUNDS_START = re.compile(r"£([0-9\.\,]*[0-9]+)")
_POUNDS_END = re.compile(r"([0-9\.\,]*[0-9]+)£")
_DOLLARS_START = re.compile(r"\$([0-9\.\,]*[0-9]+)")
_DOLLARS_END = re.compile(r"([(0-9\.\,]*[0-9]+)\$")
_EUROS_START = re.compile(r"€\s?([0-9\.\,]*[0-9]+)")
_EUROS_END = re.compile(r"([0-9\.\,]*[0-9]+)\s?€")
_DECIMAL = re.compile(r"([0-9]+\.\s*[0-9]+)")
_FRACTION = re.compile(r"([0-9]+/[0-9]+)")
_ORDINAL = re.compile(r"[0-9]+(st|nd|rd|th)")
_NUMBER = re.compile(r"[0-9]+")
_DECADE = re.compile(r"\b((?:1[0-9]|20)[0-9]0)s\b")
_DOCTOR = re.compile(r"\bDr\.(?=\s+[A-Z])")
_SUP = "⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ"
_OPERAND = rf"((-?)((\d+)(\.\d+)?[{_SUP}]*)|(\.\d+[{_SUP}]*)|([A-Za-z][{_SUP}]*))"
_ASMD = re.compile(_OPERAND + r"\s+([\+\-\×÷=])\s+" + _OPERAND)
_ASMD_WORDS = {"+": " plus ", "-": " minus ", "×": " times ", "÷": " divided by ", "=": " Equals "}
_NEGATIVE = re.compile(r"(?:^|\s+)(-)(\d+)")
_NEGATIVE_FIXED = re.compile(r"(^|\s+)-(\d+)")


@lru_cache(maxsize=1)
def _inflect():
    import inflect

    return inflect.engine()


def _words(num: int | str, **kw) -> str:
    return _inflect().number_to_words(num, **kw)


def _expand_number(m: re.Match) -> str:
    num = int(m.group(0))
    if 1000 < num < 3000:  # read like a year
        if num == 2000:
            return "two thousand"
        if 2000 < num < 2010:
            return "two thousand " + _words(num % 100)
        if num % 100 == 0:
            return _words(num // 100) + " hundred"
        return _words(num, andword="", zero="oh", group=2).replace(", ", " ")
    return _words(num, andword="")


def _say_time(hours: int, minutes: int, period: str) -> str:
    """13, 5, "p.m." -> "one five p.m."; a whole hour -> "... o'clock"."""
    if hours > 12:
        hours -= 12
    if minutes == 0:
        return f"{_words(hours)} o'clock {period}"
    return f"{_words(hours)} {_words(minutes)} {period}"


def _expand_time(m: re.Match) -> str:
    hours, minutes = int(m.group(1)), int(m.group(2))
    return _say_time(hours, minutes, "a.m." if hours < 12 else "p.m.")


def _expand_time_with_period(m: re.Match) -> str:
    return _say_time(int(m.group(1)), int(m.group(2)), "a.m." if m.group(3).lower() == "a" else "p.m.")


def _expand_measurement(m: re.Match) -> str:
    unit = m.group(3)
    num = int(m.group(1).replace(unit, "").replace(".", ""))
    plural = not (m.group(2) is None and num == 1)
    return m.group(1).replace(unit, " " + _MEASURES[unit][int(plural)])


def _money(match: str, major: tuple[str, str], minor: tuple[str, str], zero: str, fix: bool) -> str:
    parts = match.split(".")
    if len(parts) > 2:
        return match + " " + major[1]
    big = int(parts[0].replace(",", "") if fix else parts[0]) if parts[0] else 0
    small = int(parts[1].ljust(2, "0")) if len(parts) > 1 and parts[1] else 0
    big_unit = major[0] if big == 1 else major[1]
    small_unit = minor[0] if small == 1 else minor[1]
    # an amount is a quantity; upstream leaves the digits to the year-style reading (1250 → twelve fifty)
    big_text = _words(big, andword="") if fix and 1000 < big < 3000 else str(big)
    if big and small:
        return f"{big_text} {big_unit} and {small} {small_unit}"
    if big:
        return f"{big_text} {big_unit}"
    if small:
        return f"{small} {small_unit}"
    return zero


def _pounds(m: re.Match, fix: bool = False) -> str:
    return _money(m.group(1), ("pound", "pounds"), ("penny", "pence"), "zero pounds", fix)


def _dollars(m: re.Match, fix: bool = False) -> str:
    return _money(m.group(1), ("dollar", "dollars"), ("cent", "cents"), "zero dollars", fix)


def _euros(m: re.Match) -> str:
    return _money(m.group(1), ("euro", "euros"), ("cent", "cents"), "zero euros", True)


def _expand_decimal(m: re.Match) -> str:
    integer, decimals = m.group(1).split(".")[:2]
    return integer + " point " + " ".join("point" if c == "." else c for c in decimals)


def _expand_fraction(m: re.Match) -> str:
    numerator, denominator = map(int, m.group(0).split("/"))
    num_words = _words(numerator)
    if denominator == 2:
        den = "half" if numerator == 1 else "halves"
    elif denominator == 1:
        return num_words
    else:
        den = _inflect().ordinal(_words(denominator))
        if numerator > 1:
            den += "s"
    return f"{num_words} {den}"


def _pluralize_number(words: str) -> str:
    head, _, last = words.rpartition(" ")
    last = last[:-1] + "ies" if last.endswith("y") else last + "s"
    return f"{head} {last}".strip()


def _expand_decade(m: re.Match) -> str:
    digits = re.match(r"\d+", m.group(1))
    assert digits is not None  # the decade pattern starts with digits
    return _pluralize_number(_expand_number(digits))


def _comma_number_fixed(m: re.Match) -> str:
    digits = m.group(1).replace(",", "")
    if m.start() > 0 and m.string[m.start() - 1] in "$£€":
        return digits  # money keeps its digits for the currency rules
    if re.fullmatch(r"\d{1,3}(,\d{3})+", m.group(1)) and 1000 < int(digits) < 3000:
        # a grouped number is a quantity: upstream would read 1,250 like the year "twelve fifty"
        return _words(int(digits), andword="")
    return digits


def normalize_numbers(text: str, fix_mistakes: bool = True) -> str:
    """Upstream's ``en_normalization.expend.normalize`` (with the fixes listed in the module docstring)."""
    text = _ORDINAL_NUMBER.sub(lambda m: _inflect().ordinal(m.group(1)) + ", ", text)
    while _ASMD.search(text):
        text = _ASMD.sub(lambda m: m.group(1) + _ASMD_WORDS[m.group(8)] + m.group(9), text)
    if fix_mistakes:
        text = _NEGATIVE_FIXED.sub(r"\1negative \2", text)
        text = _COMMA_NUMBER.sub(_comma_number_fixed, text)
        text = _TIME_WITH_PERIOD.sub(_expand_time_with_period, text)
        text = _DECADE.sub(_expand_decade, text)
        text = _EUROS_START.sub(_euros, text)
        text = _EUROS_END.sub(_euros, text)
    else:
        text = _NEGATIVE.sub(lambda m: f"negative {m.group(2)}", text)
        text = _COMMA_NUMBER.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _TIME.sub(_expand_time, text)
    text = _MEASUREMENT.sub(_expand_measurement, text)
    text = _POUNDS_START.sub(lambda m: _pounds(m, fix_mistakes), text)
    text = _POUNDS_END.sub(lambda m: _pounds(m, fix_mistakes), text)
    text = _DOLLARS_START.sub(lambda m: _dollars(m, fix_mistakes), text)
    text = _DOLLARS_END.sub(lambda m: _dollars(m, fix_mistakes), text)
    text = _DECIMAL.sub(_expand_decimal, text)
    text = _FRACTION.sub(_expand_fraction, text)
    text = _ORDINAL.sub(lambda m: _words(m.group(0)), text)
    text = _NUMBER.sub(_expand_number, text)
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    text = text.replace("%", " percent")
    text = re.sub(r"[^ A-Za-z'.,?!\-]", "", text)
    text = re.sub(r"(?i)i\.e\.", "that is", text)
    text = re.sub(r"(?i)e\.g\.", "for example", text)
    # a space before every capital not at the start or after whitespace: ALL-CAPS words are spelled out
    return re.sub(r"(?<!^)(?<![\s])([A-Z])", r" \1", text)


def normalize_en(text: str, fix_mistakes: bool = True) -> str:
    """English normalised text (upstream ``english.text_normalize``)."""
    for src, dst in (("。", "."), ("！", "!"), ("？", "?")):
        text = text.replace(src, dst)
    if fix_mistakes:
        text = re.sub(r"[;；：]|(?<!\d):|:(?!\d)", ",", text)
        text = _DOCTOR.sub("Doctor", text)
    text = normalize_numbers(text, fix_mistakes)
    # a run of marks keeps the first one, and marks right after whitespace are dropped
    return re.sub(rf"([{_PUNCT_CLASS}\s])([{_PUNCT_CLASS}])+", r"\1", text)
