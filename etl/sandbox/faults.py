"""Fault injection: the ways a real CRM misbehaves, on demand and repeatably.

- `latency`: seconds added to every API request.
- `rate_limit`: requests per second (a token bucket holding one second's worth); a request
  over it gets HTTP 429 with `Retry-After` in whole seconds. None or 0 turns it off.
- `error_rate`: the fraction of API requests answered with HTTP 500 without doing anything.
- `lost_rate`: the fraction of CreateRelationship calls that commit the relationship and then
  close the connection without answering: the client cannot tell whether it happened.
- `down`: every API request's connection is closed without an answer and without effect.

The dice come from an RNG seeded with `fault_seed`, so a test sees the same faults on
every run for the same sequence of requests.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any


class FaultSettingsError(ValueError):
    """A fault setting out of range or unknown; the message says which and why."""


@dataclass(frozen=True)
class FaultSettings:
    latency: float = 0.0
    rate_limit: float | None = None
    error_rate: float = 0.0
    lost_rate: float = 0.0
    down: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _number(key: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise FaultSettingsError(f"{key} must be a number from {low} to {high}.")
    return float(value)


def _rate_limit(value: object) -> float | None:
    if value is None or value == 0:
        return None
    return _number("rate_limit", value, 0.001, 1_000_000.0)


def _down(value: object) -> bool:
    if not isinstance(value, bool):
        raise FaultSettingsError("down must be true or false.")
    return value


CHECKS = {
    "latency": lambda value: _number("latency", value, 0.0, 600.0),
    "rate_limit": _rate_limit,
    "error_rate": lambda value: _number("error_rate", value, 0.0, 1.0),
    "lost_rate": lambda value: _number("lost_rate", value, 0.0, 1.0),
    "down": _down,
}


def updated_settings(settings: FaultSettings, changes: Mapping[str, Any]) -> FaultSettings:
    """The settings with `changes` applied; raises FaultSettingsError for bad keys or values."""
    unknown = sorted(set(changes) - set(CHECKS))
    if unknown:
        raise FaultSettingsError(f"Unknown fault settings {unknown}; known: {sorted(CHECKS)}.")
    return replace(settings, **{key: CHECKS[key](value) for key, value in changes.items()})


class FaultInjector:
    """Decides, request by request, which fault (if any) strikes."""

    def __init__(self, settings: FaultSettings | None = None, fault_seed: int = 0) -> None:
        self.settings = settings or FaultSettings()
        self._rng = random.Random(fault_seed)
        self._refill_bucket()

    def update(self, changes: Mapping[str, Any]) -> FaultSettings:
        """Apply changes (plus `fault_seed` to restart the dice); returns the new settings."""
        changes = dict(changes)
        fault_seed = changes.pop("fault_seed", None)
        if fault_seed is not None and (
            isinstance(fault_seed, bool) or not isinstance(fault_seed, int)
        ):
            raise FaultSettingsError("fault_seed must be a whole number.")
        self.settings = updated_settings(self.settings, changes)
        if fault_seed is not None:
            self._rng = random.Random(fault_seed)
        if "rate_limit" in changes:
            self._refill_bucket()
        return self.settings

    def _refill_bucket(self) -> None:
        self._tokens = max(1.0, self.settings.rate_limit or 1.0)
        self._last_refill = time.monotonic()

    def retry_after(self) -> int | None:
        """None if the request is within the rate limit, else the seconds to wait (>= 1)."""
        rate = self.settings.rate_limit
        if rate is None:
            return None
        now = time.monotonic()
        capacity = max(1.0, rate)
        self._tokens = min(capacity, self._tokens + (now - self._last_refill) * rate)
        self._last_refill = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - self._tokens) / rate))

    def server_error(self) -> bool:
        """Whether this request gets an HTTP 500."""
        return self._roll(self.settings.error_rate)

    def lose_response(self) -> bool:
        """Whether this committed CreateRelationship loses its response."""
        return self._roll(self.settings.lost_rate)

    def _roll(self, rate: float) -> bool:
        # No draw when the fault is off, so turning one fault on leaves the others' dice alone.
        return rate > 0 and self._rng.random() < rate
