"""numfmt: any format code, any number: a rendering or None, never an exception."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from etl.numfmt import compile_format, render

PIECES = [*'0#?.,%;E+-e"\\_*[]$<>=@/ ()1', "[Red]", "[$$-409]", "[<=99]", "General", '"x"']
CODES = st.one_of(st.text(max_size=16), st.lists(st.sampled_from(PIECES), max_size=12).map("".join))


@settings(max_examples=500, deadline=None)
@given(
    code=CODES,
    value=st.one_of(
        st.floats(allow_nan=False, allow_infinity=False), st.integers(-(10**31), 10**31)
    ),
)
def test_any_code_renders_any_number_or_gives_none(code, value):
    number_format = compile_format(code)
    if number_format is not None:
        shown = render(number_format, format(Decimal(value), "f"))
        assert shown is None or shown.strip()
