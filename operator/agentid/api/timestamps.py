"""RFC 3339 date-times that the apiserver and the models agree on (``spec.expiresAt``).

The apiserver's ``format: date-time`` is looser than Python: it admits year 0000, offsets such as +99:99, any
character before the fraction and junk after a second 'T', none of which ``datetime`` can hold; and a local
time at the ends of the calendar (``0001-01-01T00:30:00+01:00``) is an instant outside years 1-9999 in UTC,
which ``astimezone`` cannot convert. So ``crdgen`` declares every date-time of the spec as a string with the
CEL rules below, and ``Timestamp`` makes the models apply the same grammar, calendar and range with the same
messages: what the apiserver stores, the operator can parse and use. Lowercase 't' and 'z' (RFC 3339 allows
them, pydantic parses them) are refused by both: no Go client of the object (metav1.Time, kubectl's Expires
column, CEL's timestamp()) could read them.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

# RFC 3339 as Go's time.RFC3339 reads it, which every Kubernetes client does (metav1.Time, kubectl's date
# columns, CEL's timestamp()): uppercase T and Z, a '.' fraction of at most 9 digits; years 0001-9999, offsets
# below 24h. [.] and [0-9] rather than \. and \d: the same text is a valid RE2 pattern inside a CEL string.
PATTERN = (
    r"^([0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]([.][0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
MAX_LENGTH = 64  # the pattern admits at most 35 characters; the bound keeps the apiserver's CEL cost estimate small
FORMAT_MESSAGE = (
    "must be an RFC 3339 date-time with a time zone, such as 2027-01-01T00:00:00Z or 2027-01-01T09:30:00.5+02:00 "
    "(uppercase T and Z, years 0001-9999, no leap second, at most 9 fractional digits)"
)
DAY_MESSAGE = "must be a day of the calendar (29 February only in leap years)"
RANGE_MESSAGE = "must be from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z once converted to UTC"

_MINUTES_IN_A_DAY = 24 * 60


def _cel_rules() -> list[dict[str, str]]:
    """The same checks in CEL, on the text. Each later rule is guarded by the grammar, so its int() and
    substring() calls only ever see well-formed text (a malformed value gets one message, not an error).
    Only the first and last day of the calendar can leave it in UTC: a '+' offset larger than the local time
    on 0001-01-01, or a '-' offset that carries 9999-12-31 past midnight."""
    well_formed = f"self.matches('{PATTERN}')"
    year, month, day = "int(self.substring(0, 4))", "int(self.substring(5, 7))", "int(self.substring(8, 10))"
    leap = f"({year} % 4 == 0 && ({year} % 100 != 0 || {year} % 400 == 0))"
    month_days = f"({month} == 2 ? ({leap} ? 29 : 28) : ({month} in [4, 6, 9, 11] ? 30 : 31))"
    sign = "self.substring(self.size() - 6, self.size() - 5)"
    local = "(int(self.substring(11, 13)) * 60 + int(self.substring(14, 16)))"
    offset = "(int(self.substring(self.size() - 5, self.size() - 3)) * 60 + int(self.substring(self.size() - 2)))"
    before_year_1 = f"self.startsWith('0001-01-01') && {sign} == '+' && {local} < {offset}"
    after_year_9999 = f"self.startsWith('9999-12-31') && {sign} == '-' && {local} + {offset} >= {_MINUTES_IN_A_DAY}"
    return [
        {"rule": well_formed, "message": FORMAT_MESSAGE},
        {"rule": f"!{well_formed} || {day} <= {month_days}", "message": DAY_MESSAGE},
        {"rule": f"!{well_formed} || !({before_year_1}) && !({after_year_9999})", "message": RANGE_MESSAGE},
    ]


CEL_RULES = _cel_rules()


def check_text(value: Any) -> Any:
    """Before pydantic parses: text follows the grammar and names a real day (a datetime object passes)."""
    if isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str):  # not a number of seconds, as pydantic would take: the CRD's type is string
        raise ValueError(f"expected a string, got {type(value).__name__}: a date-time {FORMAT_MESSAGE}")
    if not re.fullmatch(PATTERN, value):
        raise ValueError(f"invalid date-time {value[:MAX_LENGTH]!r}: {FORMAT_MESSAGE}")
    year, month, day = int(value[0:4]), int(value[5:7]), int(value[8:10])
    if day > calendar.monthrange(year, month)[1]:
        raise ValueError(f"invalid date-time {value!r}: {DAY_MESSAGE}")
    return value


def check_range(value: dt.datetime) -> dt.datetime:
    """After parsing: the instant exists in UTC, or ``astimezone`` and friends raise OverflowError later."""
    try:
        value.replace(tzinfo=None) - (value.utcoffset() or dt.timedelta(0))
    except OverflowError:
        raise ValueError(f"{value.isoformat()} {RANGE_MESSAGE}") from None
    return value


Timestamp = Annotated[dt.datetime, BeforeValidator(check_text), AfterValidator(check_range)]
"""A date-time of the spec (user input): a unit test checks that the spec has no other kind."""
