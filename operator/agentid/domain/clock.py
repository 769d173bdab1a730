"""The one wall clock. Components take ``clock`` as a keyword argument (tests pass their own) and default to these."""

from __future__ import annotations

import datetime as dt


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def now_in_seconds() -> dt.datetime:
    """Whole seconds: status timestamps stay readable and compare equal after a round trip."""
    return now().replace(microsecond=0)
