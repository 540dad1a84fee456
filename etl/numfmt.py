"""Excel number formats, so a number reads as Excel displays it: 02134, 3.50, 25%, $1,234.50.

`compile_format` turns a format code into a `NumberFormat`, or None when the code holds
something this module does not render (fractions, dates, locales' digit systems...);
`render` turns a number's text into the displayed text, or None when it cannot. None always
means: keep the text as it was read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation

# Excel's built-in number formats (the en-US ones); dates are read elsewhere.
BUILTIN_NUMBER_FORMATS = {
    1: "0",
    2: "0.00",
    3: "#,##0",
    4: "#,##0.00",
    5: '"$"#,##0_);("$"#,##0)',
    6: '"$"#,##0_);[Red]("$"#,##0)',
    7: '"$"#,##0.00_);("$"#,##0.00)',
    8: '"$"#,##0.00_);[Red]("$"#,##0.00)',
    9: "0%",
    10: "0.00%",
    11: "0.00E+00",
    37: "#,##0_);(#,##0)",
    38: "#,##0_);[Red](#,##0)",
    39: "#,##0.00_);(#,##0.00)",
    40: "#,##0.00_);[Red](#,##0.00)",
    41: '_(* #,##0_);_(* \\(#,##0\\);_(* "-"_);_(@_)',
    42: '_("$"* #,##0_);_("$"* \\(#,##0\\);_("$"* "-"_);_(@_)',
    43: '_(* #,##0.00_);_(* \\(#,##0.00\\);_(* "-"??_);_(@_)',
    44: '_("$"* #,##0.00_);_("$"* \\(#,##0.00\\);_("$"* "-"??_);_(@_)',
    48: "##0.0E+0",
}

_TOKEN = re.compile(
    r'"(?P<quoted>[^"]*)"'
    r"|\\(?P<escaped>.)"
    r"|[_*](?P<spacing>.)"
    r"|\[(?P<bracket>[^\]]*)\]"
    r"|(?P<exponent>[Ee][+-])"
    r"|(?P<general>(?i:general))"
    r"|(?P<char>.)",
    re.DOTALL,
)
_CONDITION = re.compile(r"\s*(<=|>=|<>|<|>|=)\s*(-?\d+(?:\.\d*)?)\s*")
_COLOURS = {"black", "blue", "cyan", "green", "magenta", "red", "white", "yellow"}
_SYMBOLS = {"0": "digit", "#": "digit", "?": "digit", ".": "point", ",": "comma", "%": "percent"}
_EMPTY_PLACE = {"0": "0", "#": "", "?": " "}
_GENERAL = {"general", "literal"}
_DIGIT = re.compile(r"\d")
# Doubles reach 1.8e308; every digit of one must survive the arithmetic.
_CONTEXT = Context(prec=800, rounding=ROUND_HALF_UP)
_SIGNIFICANT = Context(prec=15, rounding=ROUND_HALF_UP)

Token = tuple[str, str]


class _Unsupported(Exception):
    pass


@dataclass(frozen=True)
class Run:
    """Literals and places in order: `texts` holds each one's text, `places` the indices of
    the places (digit places 0 # ?, or General)."""

    texts: tuple[str, ...]
    places: tuple[int, ...]

    @classmethod
    def of(cls, tokens: list[Token]) -> Run:
        places = tuple(i for i, (kind, _) in enumerate(tokens) if kind in ("digit", "general"))
        return cls(tuple(text for _, text in tokens), places)


@dataclass(frozen=True)
class Section:
    condition: tuple[str, Decimal] | None
    integer: Run  # before the point (or the exponent)
    fraction: Run  # after the point, up to the exponent
    quantum: Decimal  # the fraction's last place: Decimal("0.01") for 0.00
    exponent: Run  # after E+ / E-
    exponent_sign: str  # "", "E+", "E-", "e+" or "e-"
    point: bool
    grouping: bool
    scale: int  # a power of ten: +2 per %, -3 per comma after the last digit place
    general: bool
    literal_only: bool


@dataclass(frozen=True)
class NumberFormat:
    sections: tuple[Section, ...]


def compile_format(code: str) -> NumberFormat | None:
    """The format of `code`, or None when any part of it is beyond this module."""
    try:
        parts = split_sections(tokenize(code))
        sections = tuple(compile_section(tokens) for tokens in parts[:3])
    except _Unsupported:
        return None
    return NumberFormat(sections)


def tokenize(code: str) -> list[Token]:
    tokens: list[Token] = []
    for match in _TOKEN.finditer(code):
        kind = match.lastgroup
        text = match.group(kind or "char")
        if kind in ("quoted", "escaped"):
            tokens.append(("literal", text))
        elif kind == "bracket":
            tokens.extend(bracket_tokens(text))
        elif kind == "exponent":
            tokens.append(("exponent", text))
        elif kind == "general":
            tokens.append(("general", text))
        elif kind == "char":
            tokens.append(char_token(text))
    return tokens


def bracket_tokens(text: str) -> list[Token]:
    lowered = text.lower()
    if lowered in _COLOURS or re.fullmatch(r"color\d{1,2}", lowered):
        return []
    if text.startswith("$"):
        symbol = text[1:].partition("-")[0]
        return [("literal", symbol)] if symbol else []
    if _CONDITION.fullmatch(text):
        return [("condition", text)]
    raise _Unsupported


def char_token(char: str) -> Token:
    if char in _SYMBOLS:
        return (_SYMBOLS[char], char)
    if char == ";":
        return ("section", char)
    if char == "@":
        return ("text", char)
    if char.isalnum() or char in '/"[]':
        raise _Unsupported  # dates, fractions, letters Excel would have quoted, a broken code
    return ("literal", char)


def split_sections(tokens: list[Token]) -> list[list[Token]]:
    sections: list[list[Token]] = [[]]
    for token in tokens:
        if token[0] == "section":
            sections.append([])
        else:
            sections[-1].append(token)
    if len(sections) > 4:
        raise _Unsupported
    return sections


def compile_section(tokens: list[Token]) -> Section:
    condition, tokens = read_condition(tokens)
    tokens, exponent_sign, exponent = read_exponent(tokens)
    scale = 2 * sum(kind == "percent" for kind, _ in tokens)
    tokens = [("literal", "%") if kind == "percent" else (kind, text) for kind, text in tokens]
    tokens, grouping, thousands = read_commas(tokens)
    kinds = [kind for kind, _ in tokens]
    point = "point" in kinds
    at = kinds.index("point") if point else len(tokens)
    integer, fraction = tokens[:at], tokens[at + 1 :]
    general = kinds == ["general"] or (kinds.count("general") == 1 and set(kinds) <= _GENERAL)
    if not general and any(kind not in ("digit", "literal") for kind, _ in integer + fraction):
        raise _Unsupported
    digits = any(kind == "digit" for kind, _ in integer + fraction)
    if general and (scale or thousands or exponent_sign):
        raise _Unsupported
    if grouping and has_inner_literal(integer):
        raise _Unsupported
    if exponent_sign and (grouping or not digits):
        raise _Unsupported
    return Section(
        condition=condition,
        integer=Run.of(integer),
        fraction=Run.of(fraction),
        quantum=Decimal(1).scaleb(-sum(kind == "digit" for kind, _ in fraction)),
        exponent=Run.of(exponent),
        exponent_sign=exponent_sign,
        point=point,
        grouping=grouping,
        scale=scale - 3 * thousands,
        general=general,
        literal_only=not digits and not general,
    )


def read_condition(tokens: list[Token]) -> tuple[tuple[str, Decimal] | None, list[Token]]:
    if not tokens or tokens[0][0] != "condition":
        return None, tokens
    found = _CONDITION.fullmatch(tokens[0][1])
    if found is None:
        raise _Unsupported
    return (found.group(1), Decimal(found.group(2))), tokens[1:]


def read_exponent(tokens: list[Token]) -> tuple[list[Token], str, list[Token]]:
    """The mantissa's tokens, the exponent's marker (E+, e-...) and the exponent's tokens."""
    kinds = [kind for kind, _ in tokens]
    if "exponent" not in kinds:
        return tokens, "", []
    at = kinds.index("exponent")
    exponent = tokens[at + 1 :]
    if any(kind != "digit" for kind, _ in exponent) or not exponent:
        raise _Unsupported
    return tokens[:at], tokens[at][1], exponent


def read_commas(tokens: list[Token]) -> tuple[list[Token], bool, int]:
    """Commas between digit places group thousands; after the last one, each divides by 1000;
    before the first, one is a literal."""
    places = [index for index, (kind, _) in enumerate(tokens) if kind == "digit"]
    points = [index for index, (kind, _) in enumerate(tokens) if kind == "point"]
    kept: list[Token] = []
    grouping, thousands = False, 0
    for index, (kind, text) in enumerate(tokens):
        if kind != "comma":
            kept.append((kind, text))
        elif not places or index < places[0]:
            kept.append(("literal", ","))
        elif index > places[-1]:
            thousands += 1
        elif points and index > points[0]:
            raise _Unsupported
        else:
            grouping = True
    return kept, grouping, thousands


def has_inner_literal(tokens: list[Token]) -> bool:
    places = [index for index, (kind, _) in enumerate(tokens) if kind == "digit"]
    return any(kind == "literal" for kind, _ in tokens[places[0] : places[-1]]) if places else False


def render(number_format: NumberFormat, text: str) -> str | None:
    """The number `text` (as the workbook stores it) as the format displays it, or None."""
    try:
        value = to_decimal(text)
        section, magnitude, sign = choose_section(number_format.sections, value)
        shown = render_section(section, magnitude, f"{abs(value).normalize():f}")
    except (_Unsupported, InvalidOperation, ValueError, OverflowError):
        return None
    shown = sign + shown
    # A format that shows no digit of a number, or nothing at all, would lose what today's
    # text keeps (a ";;;" hidden cell, a note reading just "N/A").
    if not shown.strip() or (value != 0 and not _DIGIT.search(shown)):
        return None
    return shown


def to_decimal(text: str) -> Decimal:
    """The stored double to 15 significant digits, as Excel shows numbers: 2.675, not
    2.67499999999999982236431605997495353221893310546875 (so halves round Excel's way), and
    999999000000000000000, not 999999000000000032768."""
    value = Decimal(text)
    if not value.is_finite():
        raise _Unsupported
    return _SIGNIFICANT.create_decimal(repr(float(text)))


def choose_section(sections: tuple[Section, ...], value: Decimal) -> tuple[Section, Decimal, str]:
    """The section showing `value`, the number it shows, and a minus sign to put before it."""
    if any(section.condition for section in sections):
        return conditional_section(sections, value), value, ""
    negative = value < 0
    if len(sections) == 1 or (len(sections) == 2 and not negative):
        return sections[0], abs(value), "-" if negative else ""
    if negative:
        return sections[1], abs(value), ""
    return (sections[0] if value > 0 else sections[2]), value, ""


def conditional_section(sections: tuple[Section, ...], value: Decimal) -> Section:
    if value < 0:
        raise _Unsupported  # where Excel puts a minus sign here is not worth guessing at
    first = sections[0]
    if first.condition is None:
        raise _Unsupported
    if holds(first.condition, value):
        return first
    if len(sections) > 1 and sections[1].condition is not None:
        if holds(sections[1].condition, value):
            return sections[1]
        if len(sections) > 2:
            return sections[2]
        raise _Unsupported
    if len(sections) > 1:
        return sections[1]
    raise _Unsupported


def holds(condition: tuple[str, Decimal], value: Decimal) -> bool:
    operator, bound = condition
    return {
        "<": value < bound,
        "<=": value <= bound,
        ">": value > bound,
        ">=": value >= bound,
        "=": value == bound,
        "<>": value != bound,
    }[operator]


def render_section(section: Section, value: Decimal, general_text: str) -> str:
    if section.literal_only:
        if value != 0:
            raise _Unsupported
        return "".join(section.integer.texts)
    if section.general:
        texts = list(section.integer.texts)
        texts[section.integer.places[0]] = general_text
        return "".join(texts)
    value = value.scaleb(section.scale, _CONTEXT)
    if section.exponent_sign:
        return render_scientific(section, value)
    return render_fixed(section, value.quantize(section.quantum, context=_CONTEXT))


def render_fixed(section: Section, rounded: Decimal) -> str:
    whole, _, fraction = f"{rounded:f}".partition(".")
    integer = fill_integer(section.integer, whole.lstrip("0"), section.grouping)
    if not section.point:
        return integer
    return integer + "." + fill_fraction(section.fraction, fraction)


def render_scientific(section: Section, value: Decimal) -> str:
    integer_places = [section.integer.texts[index] for index in section.integer.places]
    width = len(integer_places)
    # "##0.0E+0" is engineering notation: the exponent a multiple of the places before the
    # point.
    step = width if width > 1 and "#" in integer_places else 0
    exponent = 0
    mantissa = value.quantize(section.quantum, context=_CONTEXT)
    if value != 0:
        exponent = scientific_exponent(value.adjusted(), width, step)
        mantissa = shifted(value, exponent, section.quantum)
        if mantissa.adjusted() > value.adjusted() - exponent:  # 9.999 rounded up to 10.00
            exponent = scientific_exponent(mantissa.adjusted() + exponent, width, step)
            mantissa = shifted(value, exponent, section.quantum)
    sign = "-" if exponent < 0 else ("+" if section.exponent_sign[1] == "+" else "")
    digits = fill_integer(section.exponent, str(abs(exponent)).lstrip("0"), grouping=False)
    return render_fixed(section, mantissa) + section.exponent_sign[0] + sign + digits


def scientific_exponent(adjusted: int, width: int, step: int) -> int:
    if step:
        return (adjusted // step) * step
    return adjusted - (width - 1) if width else adjusted + 1


def shifted(value: Decimal, exponent: int, quantum: Decimal) -> Decimal:
    return value.scaleb(-exponent, _CONTEXT).quantize(quantum, context=_CONTEXT)


def fill_integer(run: Run, digits: str, grouping: bool) -> str:
    """Digits into the places right to left, the leftmost place taking any left over."""
    out = list(run.texts)
    places = run.places
    for index in reversed(places[1:]):
        out[index] = digits[-1:] or _EMPTY_PLACE[out[index]]
        digits = digits[:-1]
    if places:
        out[places[0]] = digits or _EMPTY_PLACE[out[places[0]]]
    if grouping and places:
        first, last = places[0], places[-1] + 1
        return "".join(out[:first]) + group("".join(out[first:last])) + "".join(out[last:])
    return "".join(out)


def group(run: str) -> str:
    digits = run.lstrip(" ")
    groups = []
    while len(digits) > 3:
        groups.append(digits[-3:])
        digits = digits[:-3]
    groups.append(digits)
    return run[: len(run) - len(run.lstrip(" "))] + ",".join(reversed(groups))


def fill_fraction(run: Run, digits: str) -> str:
    """Digits into the places left to right; trailing zeros of # places dropped, of ? places
    shown as spaces."""
    out = list(run.texts)
    for index, digit in zip(run.places, digits, strict=True):
        out[index] = digit
    for index, digit in zip(reversed(run.places), reversed(digits), strict=True):
        if digit != "0" or run.texts[index] == "0":
            break
        out[index] = _EMPTY_PLACE[run.texts[index]]
    return "".join(out)
