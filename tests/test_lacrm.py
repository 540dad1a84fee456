"""The LACRM client against httpx.MockTransport: protocol, errors, retries, rate limiting."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import pytest

from etl.lacrm import (
    AdaptiveLimiter,
    ApiError,
    AuthError,
    LacrmClient,
    LacrmError,
    RateLimited,
    TransientError,
    Unreachable,
)

KEY = "1234567-SECRETKEY-abcdefghijklmnopqrstuvwxyz"
URL = "http://127.0.0.1:9/v2/"
Handler = Callable[[httpx.Request], Coroutine[Any, Any, httpx.Response]]


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


def client_for(handler: Handler, **options: Any) -> LacrmClient:
    settings: dict[str, Any] = {"rate": 1000.0, "backoff_base": 0.001, **options}
    return LacrmClient(KEY, URL, transport=httpx.MockTransport(handler), **settings)


def ok(payload: Any) -> httpx.Response:
    return httpx.Response(200, json=payload)


def api_error(code: str, description: str) -> httpx.Response:
    return httpx.Response(400, json={"ErrorCode": code, "ErrorDescription": description})


def test_call_posts_function_and_parameters_with_the_bare_key() -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok({"RelationshipId": "4" * 31})

    async def scenario() -> Any:
        async with client_for(handler) as client:
            return await client.call("CreateRelationship", {"ContactId1": "1" * 31})

    assert run(scenario()) == {"RelationshipId": "4" * 31}
    request = seen[0]
    assert request.method == "POST"
    assert request.headers["Authorization"] == KEY
    assert json.loads(request.content) == {
        "Function": "CreateRelationship",
        "Parameters": {"ContactId1": "1" * 31},
    }


def test_empty_success_body_is_an_empty_result() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"")

    async def scenario() -> Any:
        async with client_for(handler) as client:
            return await client.call("DeleteRelationship", {"RelationshipId": "9"})

    assert run(scenario()) == {}


def test_a_400_is_an_api_error_with_code_and_description() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return api_error("ContactNotFound", "No contact with that ContactId")

    async def scenario() -> None:
        async with client_for(handler) as client:
            await client.call("GetContact", {"ContactId": "1"})

    with pytest.raises(ApiError) as caught:
        run(scenario())
    assert caught.value.code == "ContactNotFound"
    assert caught.value.description == "No contact with that ContactId"
    assert not isinstance(caught.value, AuthError)


@pytest.mark.parametrize(
    ("code", "description"),
    [
        ("InvalidApiKey", "The API key is invalid."),
        ("Unauthorized", "Invalid API key"),
        ("1234", "Authentication failed: unknown user code or API token"),
        ("BadCredentials", "The credentials are not valid"),
    ],
)
def test_a_bad_key_is_an_auth_error(code: str, description: str) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return api_error(code, description)

    async def scenario() -> None:
        async with client_for(handler) as client:
            await client.call("GetContacts", {})

    with pytest.raises(AuthError):
        run(scenario())


def test_the_key_appears_in_no_message_repr_or_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    responses = iter(
        [
            api_error("InvalidApiKey", f"API key {KEY} is not valid"),
            api_error("Oops", f"echo {KEY}"),
            httpx.Response(500, text=KEY),
            httpx.Response(400, text=f"not json {KEY}"),
        ]
    )

    async def handler(request: httpx.Request) -> httpx.Response:
        return next(responses)

    errors: list[LacrmError] = []

    async def scenario() -> str:
        async with client_for(handler, max_attempts=1) as client:
            for _ in range(4):
                try:
                    await client.call("GetContacts", {})
                except LacrmError as error:
                    errors.append(error)
            return repr(client) + str(vars(client))

    shown = run(scenario())
    assert [type(e) for e in errors] == [AuthError, ApiError, TransientError, ApiError]
    texts = [shown, caplog.text] + [f"{e!s}{e!r}{e.args}{vars(e)}" for e in errors]
    assert all(KEY not in text for text in texts)


def test_reads_are_retried_on_transient_faults() -> None:
    replies = iter(
        [
            httpx.Response(500),
            httpx.Response(503),
            httpx.ReadTimeout("slow"),
            httpx.RemoteProtocolError("closed"),
            ok({"ok": True}),
        ]
    )

    async def handler(request: httpx.Request) -> httpx.Response:
        reply = next(replies)
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def scenario() -> tuple[Any, int]:
        async with client_for(handler) as client:
            result = await client.call("GetContact", {"ContactId": "1"})
            return result, client.calls["GetContact"]

    assert run(scenario()) == ({"ok": True}, 5)


def test_reads_give_up_after_max_attempts() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502)

    async def scenario() -> int:
        async with client_for(handler, max_attempts=3) as client:
            with pytest.raises(TransientError):
                await client.call("GetContact", {"ContactId": "1"})
            return client.calls["GetContact"]

    assert run(scenario()) == 3


@pytest.mark.parametrize(
    "fault",
    [
        httpx.Response(500),
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("reset"),
        httpx.Response(200, text="{not json"),
    ],
)
def test_a_write_whose_outcome_is_unknown_is_not_retried(fault: Any) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(fault, Exception):
            raise fault
        return fault

    async def scenario() -> int:
        async with client_for(handler) as client:
            with pytest.raises(TransientError):
                await client.call("CreateRelationship", {}, idempotent=False)
            return client.calls["CreateRelationship"]

    assert run(scenario()) == 1


@pytest.mark.parametrize(
    ("fault", "may_still_apply"),
    [(httpx.ReadTimeout("slow"), True), (httpx.ReadError("reset"), False), (None, False)],
)
def test_a_timeout_says_the_crm_may_still_be_working(fault: Any, may_still_apply: bool) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if fault is not None:
            raise fault
        return httpx.Response(503)

    async def scenario() -> None:
        async with client_for(handler) as client:
            await client.call("CreateRelationship", {}, idempotent=False)

    with pytest.raises(TransientError) as caught:
        run(scenario())
    assert caught.value.may_still_apply is may_still_apply


def test_a_write_that_never_left_is_retried() -> None:
    replies = iter([httpx.ConnectError("refused"), httpx.ConnectTimeout("no"), None])

    async def handler(request: httpx.Request) -> httpx.Response:
        reply = next(replies)
        if reply is not None:
            raise reply
        return ok({"RelationshipId": "7"})

    async def scenario() -> tuple[Any, int]:
        async with client_for(handler) as client:
            result = await client.call("CreateRelationship", {}, idempotent=False)
            return result, client.calls["CreateRelationship"]

    # Connection failures send nothing, so only the request that went out is counted.
    assert run(scenario()) == ({"RelationshipId": "7"}, 1)


def test_unreachable_after_max_attempts() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    async def scenario() -> None:
        async with client_for(handler, max_attempts=2) as client:
            await client.call("GetContacts", {})

    with pytest.raises(Unreachable):
        run(scenario())


def test_a_429_waits_retry_after_lowers_the_rate_and_retries_a_write() -> None:
    replies = iter(
        [httpx.Response(429, headers={"Retry-After": "0.3"}), ok({"RelationshipId": "8"})]
    )
    sent_at: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sent_at.append(time.monotonic())
        return next(replies)

    async def scenario() -> tuple[Any, float, float]:
        async with client_for(handler, rate=100.0) as client:
            result = await client.call("CreateRelationship", {}, idempotent=False)
            return result, client.limiter.rate, client.calls["CreateRelationship"]

    result, rate, calls = run(scenario())
    assert result == {"RelationshipId": "8"}
    assert calls == 2
    assert sent_at[1] - sent_at[0] >= 0.29
    assert rate < 100.0


def test_persistent_429_raises_rate_limited() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "0"})

    async def scenario() -> None:
        async with client_for(handler, max_attempts=2) as client:
            await client.call("GetContacts", {})

    with pytest.raises(RateLimited):
        run(scenario())


def test_paged_reads_until_no_more_results() -> None:
    pages: list[dict[str, Any]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        params = json.loads(request.content)["Parameters"]
        pages.append(params)
        page = params["Page"]
        return ok({"HasMoreResults": page < 3, "Results": [{"n": page}]})

    async def scenario() -> list[list[dict[str, Any]]]:
        async with client_for(handler) as client:
            return [p async for p in client.paged("GetContacts", {"X": 1}, page_size=2)]

    assert run(scenario()) == [[{"n": 1}], [{"n": 2}], [{"n": 3}]]
    assert pages == [{"X": 1, "MaxNumberOfResults": 2, "Page": n} for n in (1, 2, 3)]


def test_requests_are_paced_at_the_rate_and_bounded_in_flight() -> None:
    in_flight = 0
    most_in_flight = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return ok({})

    async def scenario() -> float:
        async with client_for(handler, rate=50.0, concurrency=3) as client:
            start = time.monotonic()
            await asyncio.gather(*(client.call("GetContact", {}) for _ in range(11)))
            return time.monotonic() - start

    elapsed = run(scenario())
    # 11 requests at 50/s, of which 1.5 may be caught up (a burst of 0.05 s at 50/s).
    assert elapsed >= (10 - 1.5) / 50.0 - 0.01
    assert most_in_flight == 3


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_limiter_halves_once_per_epoch_with_a_floor() -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter(8.0, clock=clock, min_rate=0.5)
    epoch = limiter.epoch
    limiter.on_rate_limited(1.0, epoch)
    limiter.on_rate_limited(1.0, epoch)  # sent before the decrease: no news
    assert (limiter.rate, limiter.ceiling, limiter.throttled) == (4.0, 8.0, 2)
    for _ in range(10):
        limiter.on_rate_limited(None, limiter.epoch)
    assert limiter.rate == 0.5


def test_limiter_climbs_fast_below_the_ceiling_and_slowly_above() -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter(100.0, clock=clock)
    limiter.on_rate_limited(1.0, limiter.epoch)  # too fast at 100: pause until t=1
    limiter.on_rate_limited(1.0, limiter.epoch)  # and at 50
    assert (limiter.rate, limiter.ceiling) == (25.0, 50.0)
    clock.now = 3.0  # two seconds after the pause: +10% of the ceiling per second
    limiter.on_success()
    assert limiter.rate == pytest.approx(35.0)
    clock.now = 10.0
    limiter.on_success()
    assert limiter.rate == pytest.approx(45.0)  # 90% of the ceiling, then probing
    clock.now = 20.0
    limiter.on_success()
    assert limiter.rate == pytest.approx(55.0)  # +1% of the target per second
    clock.now = 200.0
    limiter.on_success()
    assert limiter.rate == 100.0


def test_limiter_spaces_slots_and_honours_retry_after() -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter(2.0, clock=clock)
    assert [limiter.reserve() for _ in range(3)] == [0.0, 0.5, 1.0]
    limiter.on_rate_limited(5.0, limiter.epoch)
    assert limiter.reserve() == 5.0


def test_a_late_caller_catches_up_on_a_few_missed_slots_only() -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter(100.0, clock=clock)  # 10 ms apart, 5 slots of catch-up
    limiter.reserve()
    clock.now = 1.0  # idle for a second: 99 slots missed
    waits = [limiter.reserve() for _ in range(8)]
    assert waits[:5] == [0.0] * 5
    assert waits[5:] == pytest.approx([0.01, 0.02, 0.03])


def test_retries_back_off_exponentially_with_jitter_up_to_a_ceiling() -> None:
    client = client_for(lambda request: httpx.Response(200, json={}), backoff_base=0.5)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (8, 30.0), (20, 30.0)]:
        waits = [client._backoff(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= wait <= ceiling for wait in waits), attempt
        assert len(set(waits)) > 150, "no jitter: clients retrying together stay together"
