"""The one wall clock. Components take ``clock`` as a keyword argument (tests pass their own) and default to these."""

from __future__ import annotations

import datetime as dt


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def now_in_seconds() -> dt.datetime:
    """Whole seconds: status timestamps stay readable and compare equal after a round trip."""
    return now().replace(microsecond=0)


def parse(value: object) -> dt.datetime | None:
    """A timestamp as the API writes it (RFC 3339 with ``Z`` or an offset, a MicroTime), or a datetime already, as
    an aware datetime; None when absent or garbled: the one reader of the API's times."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
