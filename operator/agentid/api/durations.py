"""Go-style durations ("720h", "1h30m", "15m"), the format Kubernetes users already write.

Used by the API models (validation) and by the domain (rotation and token lifetimes). The apiserver checks
the same grammar with CEL's ``duration()`` so the two never disagree.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

# At most four parts of at most five digits each: every value the grammar admits fits CEL's 64-bit durations
# (~2.5 million hours), so the apiserver's ``duration()`` can never overflow into an evaluation error.
PATTERN = r"^([0-9]{1,5}([.][0-9]{1,9})?(ns|us|ms|s|m|h)){1,4}$"  # [.], not \., is valid in CEL strings too
FORMAT_MESSAGE = "must be a Go duration such as 720h, 1h30m or 15m (at most 4 parts of at most 5 digits)"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@functools.lru_cache(maxsize=1024)
def parse(text: str) -> dt.timedelta:
    """Parse a Go duration string; raises ValueError with the offending text. Cached: every token exchange reads
    its agent's tokenTTL, and a fleet spells only a handful of durations."""
    if not re.fullmatch(PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: {FORMAT_MESSAGE}")
    seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(text))
    return dt.timedelta(seconds=seconds)


def format_duration(value: dt.timedelta) -> str:
    """The shortest Go-style spelling of a whole-second duration (for messages and defaults)."""
    seconds = int(value.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return text or "0s"


@dataclass(frozen=True)
class DurationRange:
    """Annotated metadata: the grammar and both bounds of a duration string, in Python and, via CEL, in the
    apiserver. Every range has a maximum: an unbounded one let a huge value through to ``duration()``."""

    minimum: dt.timedelta
    maximum: dt.timedelta

    def check(self, text: str) -> str:
        value = parse(text)
        if value < self.minimum:
            raise ValueError(f"{text} is shorter than the minimum {format_duration(self.minimum)}")
        if value > self.maximum:
            raise ValueError(f"{text} is longer than the maximum {format_duration(self.maximum)}")
        return text

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        json_schema = handler(schema)
        low, high = format_duration(self.minimum), format_duration(self.maximum)
        # Each bound is guarded by the grammar (CEL's && is false if either side is false, even if the other
        # errs), so a malformed value gets the format message and never an evaluation error.
        well_formed = f"self.matches('{PATTERN}')"
        json_schema["x-kubernetes-validations"] = [
            {"rule": well_formed, "message": FORMAT_MESSAGE},
            {"rule": f"!{well_formed} || duration(self) >= duration('{low}')", "message": f"must be at least {low}"},
            {"rule": f"!{well_formed} || duration(self) <= duration('{high}')", "message": f"must be at most {high}"},
        ]
        return json_schema
