"""Async client for the LACRM v2 API: auth, errors, retries and adaptive rate limiting.

One `LacrmClient` per run. Every request goes through one shared token bucket (`rate`
requests/s) and at most `concurrency` requests are in flight. Reads are retried on any transient
fault; a non-idempotent write is retried only when the request provably did nothing (it never
left, or the CRM answered 429), otherwise `TransientError` tells the caller the outcome is unknown.
"""

from __future__ import annotations

import asyncio
import collections
import importlib.util
import json
import logging
import random
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar

import httpx

if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
    # httpcore tries `import sniffio` on every request; a failed import is not cached and
    # costs a walk of sys.path each time. None in sys.modules makes it fail at once.
    sys.modules["sniffio"] = None  # type: ignore[assignment]

DEFAULT_API_URL = "https://api.lessannoyingcrm.com/v2/"
MAX_PAGE_SIZE = 10_000
MAX_PAGES = 100_000
MIN_RATE = 0.1
BURST_SECONDS = 0.05
SAFE_FRACTION = 0.9
CLIMB_PER_SECOND = 0.1
PROBE_PER_SECOND = 0.01
MAX_RESERVATIONS = 100
MAX_RETRY_AFTER = 300.0
RATE_LIMIT_ATTEMPTS_FACTOR = 3

log = logging.getLogger(__name__)
Item = TypeVar("Item")

_AUTH_WORDS = re.compile(r"api[\s_-]*key|apikey|auth|credential|unauthori[sz]ed|token", re.I)
_BAD_WORDS = re.compile(
    r"invalid|incorrect|wrong|bad|not valid|unknown|missing|revoked|expired|"
    r"denied|unauthori[sz]ed|forbidden|failed",
    re.I,
)


class LacrmError(Exception):
    """Any failure talking to the CRM."""


class AuthError(LacrmError):
    """The CRM refused the API key. Nothing more will work until the key is fixed."""


class ApiError(LacrmError):
    """The CRM understood the request and said no (HTTP 400 with an ErrorCode)."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}" if code else description)
        self.code = code
        self.description = description


class RateLimited(LacrmError):
    """The CRM kept answering 429 after every retry."""


class TransientError(LacrmError):
    """The request may or may not have taken effect (timeout after sending, reset, 5xx).

    `may_still_apply`: we stopped waiting (a timeout) while the CRM may still be working on it.
    """

    def __init__(self, message: str, *, may_still_apply: bool = False) -> None:
        super().__init__(message)
        self.may_still_apply = may_still_apply


class Unreachable(LacrmError):
    """The request never reached the CRM (connection refused, DNS, connect timeout)."""


class _Secret:
    """Holds the API key so that no repr, str or traceback local ever shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        return text.replace(self._value, "***") if self._value else text

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


class AdaptiveLimiter:
    """Paces requests at `rate` per second, for every caller of one client.

    On a 429 everyone pauses for Retry-After and the rate halves; the rate that was too fast is
    remembered as the ceiling. Successes climb back quickly to 90% of the ceiling, then probe
    slowly above it towards the configured rate, so the rate settles just under a limit that is
    not published and may change. A late caller may catch up on slots it missed, but never by
    more than `burst_seconds` worth of requests.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        min_rate: float = MIN_RATE,
        burst_seconds: float = BURST_SECONDS,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.target = rate
        self.rate = rate
        self.ceiling = rate
        self.min_rate = min(min_rate, rate)
        self._burst_seconds = burst_seconds
        self._clock = clock
        self._next_slot = clock()
        self._last_climb = clock()
        self.throttled = 0
        self.pauses = 0
        self.epoch = 0

    def reserve(self) -> float:
        """Claim the next send slot; return how many seconds to wait for it."""
        now = self._clock()
        catch_up = max(0.0, self.rate * self._burst_seconds - 1.0) / self.rate
        slot = max(self._next_slot, now - catch_up)
        self._next_slot = slot + 1.0 / self.rate
        return max(0.0, slot - now)

    async def acquire(self) -> int:
        """Wait for a send slot; return the epoch the request is sent in.

        A 429 that arrives while waiting voids the slot (it was planned at the old rate, and
        may fall inside the pause), so the caller takes a new one.
        """
        for _ in range(MAX_RESERVATIONS):
            pauses = self.pauses
            delay = self.reserve()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.pauses == pauses:
                break
        return self.epoch

    def on_rate_limited(self, retry_after: float | None, sent_in_epoch: int) -> None:
        """A 429: pause everyone for Retry-After (or one interval) and halve the rate.

        Requests sent before the last decrease were paced at the old rate; their 429s say
        nothing new, so only the first 429 of an epoch lowers the rate again.
        """
        self.throttled += 1
        self.pauses += 1
        if sent_in_epoch == self.epoch:
            self.epoch += 1
            self.ceiling = self.rate
            self.rate = max(self.min_rate, self.rate / 2)
        now = self._clock()
        pause = retry_after if retry_after is not None else 1.0 / self.rate
        self._next_slot = max(self._next_slot, now + pause)
        self._last_climb = self._next_slot

    def on_success(self) -> None:
        now = self._clock()
        elapsed = now - self._last_climb
        if elapsed <= 0:
            return
        self._last_climb = now
        safe = SAFE_FRACTION * self.ceiling
        if self.rate < safe:
            self.rate = min(safe, self.rate + self.ceiling * CLIMB_PER_SECOND * elapsed)
        elif self.rate < self.target:
            self.rate = min(self.target, self.rate + self.target * PROBE_PER_SECOND * elapsed)


class LacrmClient:
    """`async with LacrmClient(key) as client: await client.call("GetContact", {...})`."""

    def __init__(
        self,
        api_key: str,
        url: str = DEFAULT_API_URL,
        *,
        rate: float = 2.0,
        concurrency: int = 4,
        timeout: float = 30.0,
        max_attempts: int = 6,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        if not api_key:
            raise AuthError("no API key given: set LACRM_API_KEY or use --api-key-file")
        if concurrency < 1 or max_attempts < 1:
            raise ValueError("concurrency and max_attempts must be at least 1")
        self._key = _Secret(api_key)
        self.url = url
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.limiter = AdaptiveLimiter(rate)
        self.calls: collections.Counter[str] = collections.Counter()
        self._in_flight = asyncio.Semaphore(concurrency)
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            headers={"Content-Type": "application/json"},
        )

    def __repr__(self) -> str:
        target = self.limiter.target
        return f"LacrmClient(url={self.url!r}, rate={target}, concurrency={self.concurrency})"

    async def __aenter__(self) -> LacrmClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(self, function: str, params: dict[str, Any], *, idempotent: bool = True) -> Any:
        """Call one API function and return its JSON result.

        `idempotent=False` (CreateRelationship): a fault after the request may have left raises
        `TransientError` at once, for the caller to settle by reading back.
        """
        body = {"Function": function, "Parameters": params}
        faults = 0
        throttles = 0
        while True:
            try:
                return await self._send_once(function, body)
            except RateLimited:
                # A 429 did nothing, so any call may be repeated; the limiter already paused
                # every caller for Retry-After. Its own budget: throttling is not failing.
                throttles += 1
                if throttles >= self.max_attempts * RATE_LIMIT_ATTEMPTS_FACTOR:
                    raise
            except (Unreachable, TransientError) as error:
                faults += 1
                retryable = idempotent or isinstance(error, Unreachable)
                if not retryable or faults >= self.max_attempts:
                    raise
                log.debug("%s: %s; retry %d", function, error, faults)
                await asyncio.sleep(self._backoff(faults))

    async def paged(
        self, function: str, params: dict[str, Any], page_size: int = MAX_PAGE_SIZE
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield each page's Results, from Page 1 until HasMoreResults is false."""
        for page in range(1, MAX_PAGES + 1):
            result = await self.call(
                function, {**params, "MaxNumberOfResults": page_size, "Page": page}
            )
            if not isinstance(result, dict) or not isinstance(result.get("Results"), list):
                raise LacrmError(f"{function} returned no Results list on page {page}")
            results: list[dict[str, Any]] = result["Results"]
            yield results
            if not result.get("HasMoreResults") or not results:
                return
        raise LacrmError(f"{function} still had more results after {MAX_PAGES} pages")

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    async def _send_once(self, function: str, body: dict[str, Any]) -> Any:
        async with self._in_flight:
            epoch = await self.limiter.acquire()
            try:
                response = await self._http.post(
                    self.url, json=body, headers={"Authorization": self._key.reveal()}
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
                raise Unreachable(self._describe(function, error)) from None
            except httpx.TransportError as error:
                self.calls[function] += 1
                still_running = isinstance(error, httpx.TimeoutException)
                message = self._describe(function, error)
                raise TransientError(message, may_still_apply=still_running) from None
            self.calls[function] += 1
        return self._interpret(function, response, epoch)

    def _describe(self, function: str, error: Exception) -> str:
        detail = self._key.scrub(str(error)) or type(error).__name__
        return f"{function}: {detail}"

    def _interpret(self, function: str, response: httpx.Response, epoch: int) -> Any:
        status = response.status_code
        if status == 200:
            self.limiter.on_success()
            return self._json_body(function, response)
        if status == 429:
            self.limiter.on_rate_limited(_retry_after(response), epoch)
            log.info("%s: rate limited, now %.2f requests/s", function, self.limiter.rate)
            raise RateLimited(f"{function}: the CRM kept answering 429 (rate limited)")
        if status >= 500 or status == 408:
            raise TransientError(f"{function}: HTTP {status} from the CRM")
        code, description = self._error_fields(response)
        if status in (401, 403) or _is_auth_failure(code, description):
            raise AuthError(
                "the CRM rejected the API key; check LACRM_API_KEY"
                + (f" ({code}: {description})" if code or description else "")
            )
        if status == 400:
            raise ApiError(code, description)
        raise ApiError(f"HTTP {status}", description or f"{function} failed")

    def _json_body(self, function: str, response: httpx.Response) -> Any:
        if not response.content.strip():
            return {}
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            # A 200 means the call took effect, but without the body we cannot know its result.
            raise TransientError(f"{function}: unreadable response from the CRM") from None

    def _error_fields(self, response: httpx.Response) -> tuple[str, str]:
        try:
            payload = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return "", self._key.scrub(response.text[:200])
        if not isinstance(payload, dict):
            return "", self._key.scrub(str(payload)[:200])
        code = str(payload.get("ErrorCode") or "")
        description = str(payload.get("ErrorDescription") or "")
        return self._key.scrub(code), self._key.scrub(description)


def _is_auth_failure(code: str, description: str) -> bool:
    """LACRM answers a bad key with an ordinary 400: recognise it by its words."""
    text = f"{code} {description}"
    return bool(_AUTH_WORDS.search(text)) and bool(_BAD_WORDS.search(text))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


async def run_pool(
    items: Iterable[Item], work: Callable[[Item], Awaitable[None]], workers: int
) -> None:
    """Run `work` on every item with at most `workers` at once; the first error cancels the rest
    and is raised as itself (not wrapped in an ExceptionGroup)."""
    queue = list(items)
    queue.reverse()

    async def worker() -> None:
        while queue:
            await work(queue.pop())

    tasks = [asyncio.create_task(worker()) for _ in range(min(workers, len(queue)))]
    if not tasks:
        return
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except BaseException:
        await _cancel(tasks)
        raise
    await _cancel(list(pending))
    # Retrieve every error, not just the first: an unretrieved one is logged at GC time.
    errors = [task.exception() for task in done if not task.cancelled()]
    first = next((error for error in errors if error is not None), None)
    if first is not None:
        raise first


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
