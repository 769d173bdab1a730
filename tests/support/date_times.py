"""Edge-case date-times, each with who refuses it and how: the models (unit tests) and the CRD on the real
apiserver (integration tests) must give the same verdict for every one of them."""

from __future__ import annotations

from dataclasses import dataclass

from agentid.api import timestamps

FORMAT, DAY, RANGE = timestamps.FORMAT_MESSAGE, timestamps.DAY_MESSAGE, timestamps.RANGE_MESSAGE


@dataclass(frozen=True)
class Case:
    text: str
    why: str
    refused_with: str | None = None  # None: admitted; else part of the message of both the apiserver and the model
    apiserver_says: str | None = None  # where the apiserver's own check speaks first

    @property
    def apiserver_message(self) -> str | None:
        return self.apiserver_says or self.refused_with


CASES = (
    Case("0001-01-01T00:00:00Z", "first instant Python can hold"),
    Case("9999-12-31T23:59:59.999999999Z", "last instant (Python keeps 6 of the 9 digits)"),
    Case("0001-01-01T00:00:00-01:00", "year 1 with a negative offset is 01:00Z"),
    Case("0001-01-01T01:00:00+01:00", "exactly 0001-01-01T00:00:00Z"),
    Case("9999-12-31T22:59:59-01:00", "exactly 9999-12-31T23:59:59Z"),
    Case("9999-12-31T23:59:59+01:00", "a positive offset at the end of 9999 stays inside it"),
    Case("2027-01-01t00:00:00z", "lowercase t and z (RFC 3339 allows them; Go's time.RFC3339 does not)", FORMAT),
    Case("2027-01-01T00:00:00z", "lowercase z", FORMAT),
    Case("2027-01-01T09:30:00.5+02:00", "fraction and offset"),
    Case("2027-01-01T00:00:00.123456789Z", "9 fractional digits, as Go writes"),
    Case("2027-01-01T00:00:00+23:59", "largest offset"),
    Case("2027-01-01T00:00:00-00:00", "unknown local offset"),
    Case("2028-02-29T00:00:00Z", "leap day"),
    Case("0000-01-01T00:00:00Z", "year 0", FORMAT),
    Case("0000-12-31T23:00:00-01:00", "year 0 locally, even if year 1 in UTC", FORMAT),
    Case("2027-01-01T00:00:00x5Z", "any character before the fraction", FORMAT),
    Case("2027-01-01T00:00:00,5Z", "comma fraction (not RFC 3339)", FORMAT),
    Case("2027-01-01T00:00:00.1234567890Z", "10 fractional digits", FORMAT),
    Case("2027-01-01T00:00:00+24:00", "offset of a day", FORMAT),
    Case("2027-01-01T00:00:00+99:99", "offset out of range", FORMAT),
    Case("2027-01-01T00:00:00+00:60", "offset minutes out of range", FORMAT),
    Case("2027-01-01T00:00:00ZTjunk", "text after a second T", FORMAT),
    Case("0001-01-01T00:30:00+01:00", "before year 1 in UTC", RANGE),
    Case("9999-12-31T23:00:00-01:00", "after year 9999 in UTC", RANGE),
    Case("9999-12-31T23:59:59-00:01", "one minute after year 9999 in UTC", RANGE),
    Case("2027-01-01T23:59:60Z", "leap second (Python has none)", FORMAT),
    Case("2027-01-01T24:00:00Z", "hour 24", FORMAT),
    Case("2027-01-01T00:00:00", "no time zone", FORMAT),
    Case("2027-01-01 00:00:00Z", "space for T", FORMAT),
    Case("2027-01-01", "a date", FORMAT),
    Case("1798761600", "seconds since the epoch", FORMAT),
    Case("2027-02-29T00:00:00Z", "29 February of a common year", DAY),
    Case("1900-02-29T00:00:00Z", "29 February of a century that is not a leap year", DAY),
    Case("2027-04-31T00:00:00Z", "31 April", DAY),
    Case("2000-02-29T00:00:00Z", "29 February of a leap century"),
    Case("", "empty", FORMAT),
    Case("2027-01-01T00:00:00." + "0" * 50 + "Z", "longer than any date-time", FORMAT, apiserver_says="Too long"),
)
