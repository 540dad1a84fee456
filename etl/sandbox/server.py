"""The sandbox server: LACRM's API at `/v2/` plus control endpoints at `/_sandbox/`.

API requests (POST `/v2/`, `Authorization: <key>`) go through the fault injector and then
`api.call`. Control endpoints need no key and never see faults:

- `GET  /_sandbox/state`: relationships, call counts, write calls, duplicate pairs, faults.
- `GET  /_sandbox/faults`, `POST /_sandbox/faults` with a JSON object of settings to change.
- `POST /_sandbox/reset-counters`: zero the call and fault counters.

Counters count every API request that arrives with a readable body, before faults strike
(except `down`, which drops the connection without doing anything), so a test sees what its
client sent, retries included.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import sys
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from etl.sandbox import api
from etl.sandbox.errors import INVALID_API_KEY, INVALID_REQUEST, ApiError
from etl.sandbox.faults import FaultInjector, FaultSettingsError
from etl.sandbox.http import MAX_HEAD_BYTES, HttpError, Request, Response, read_request
from etl.sandbox.store import Store

HOST = "127.0.0.1"
API_PATHS = frozenset({"/v2/", "/v2"})
CONTROL_PREFIX = "/_sandbox/"
LOOPBACK_PEERS = frozenset({"127.0.0.1", "::1"})
IDLE_TIMEOUT_SECONDS = 120.0
NO_FUNCTION = "(no function)"


class Drop:
    """Answer nothing: close the connection (a lost response, or a CRM that is down)."""


DROP = Drop()


def json_response(
    status: int, payload: Any, headers: list[tuple[str, str]] | None = None
) -> Response:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return Response(status, body, headers=headers or [])


def api_error_response(error: ApiError) -> Response:
    return json_response(400, error.to_json())


@dataclass
class ApiCall:
    function: str
    parameters: dict[str, Any]
    error: ApiError | None = None


def parse_api_call(body: bytes) -> ApiCall:
    """The Function and Parameters of a request body; a bad body carries its ApiError."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return ApiCall(NO_FUNCTION, {}, ApiError(INVALID_REQUEST, "The body must be JSON."))
    if not isinstance(payload, dict) or not isinstance(payload.get("Function"), str):
        error = ApiError(
            INVALID_REQUEST, 'The body must be {"Function": ..., "Parameters": {...}}.'
        )
        return ApiCall(NO_FUNCTION, {}, error)
    parameters = payload.get("Parameters", {})
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        error = ApiError(INVALID_REQUEST, "Parameters must be a JSON object.")
        return ApiCall(payload["Function"], {}, error)
    return ApiCall(payload["Function"], parameters)


class Sandbox:
    """One sandbox account: its store, its API key, its faults and its counters."""

    def __init__(self, store: Store, api_key: str, faults: FaultInjector | None = None) -> None:
        if not api_key:
            raise ValueError("The sandbox needs an API key.")
        self.store = store
        self.faults = faults or FaultInjector()
        self._api_key = api_key.encode("utf-8")
        self.reset_counters()

    def reset_counters(self) -> None:
        self.calls: Counter[str] = Counter()
        self.write_calls = 0
        self.fault_counts: Counter[str] = Counter()

    # --- API ---------------------------------------------------------------------------

    async def handle_api(self, request: Request) -> Response | Drop:
        if request.method != "POST":
            return json_response(405, {"error": "The API takes POST only."}, [("Allow", "POST")])
        if self.faults.settings.down:
            self.fault_counts["dropped"] += 1
            return DROP
        call = parse_api_call(request.body)
        self._count(call.function)
        fault = await self._injected_fault()
        if fault is not None:
            return fault
        if not self._authorised(request):
            return api_error_response(ApiError(INVALID_API_KEY, "The API key is not valid."))
        if call.error is not None:
            return api_error_response(call.error)
        try:
            result = api.call(self.store, call.function, call.parameters)
        except ApiError as error:
            return api_error_response(error)
        if call.function == "CreateRelationship" and self.faults.lose_response():
            self.fault_counts["lost"] += 1
            return DROP
        return json_response(200, result)

    def _count(self, function: str) -> None:
        self.calls[function] += 1
        if function in api.WRITE_FUNCTIONS:
            self.write_calls += 1

    async def _injected_fault(self) -> Response | None:
        latency = self.faults.settings.latency
        if latency > 0:
            await asyncio.sleep(latency)
        retry_after = self.faults.retry_after()
        if retry_after is not None:
            self.fault_counts["rate_limited"] += 1
            error = {"ErrorCode": "RateLimited", "ErrorDescription": "Too many requests."}
            return json_response(429, error, [("Retry-After", str(retry_after))])
        if self.faults.server_error():
            self.fault_counts["server_errors"] += 1
            error = {"ErrorCode": "InternalError", "ErrorDescription": "Injected server error."}
            return json_response(500, error)
        return None

    def _authorised(self, request: Request) -> bool:
        given = request.headers.get("authorization", "").strip().encode("utf-8")
        return hmac.compare_digest(given, self._api_key)

    # --- control -----------------------------------------------------------------------

    def handle_control(self, request: Request) -> Response:
        action = request.path.removeprefix(CONTROL_PREFIX).rstrip("/")
        route = (request.method, action)
        if route == ("GET", "state"):
            return json_response(200, self.state())
        if route == ("GET", "faults"):
            return json_response(200, self.faults.settings.to_json())
        if route == ("POST", "faults"):
            return self._change_faults(request.body)
        if route == ("POST", "reset-counters"):
            self.reset_counters()
            return json_response(200, {})
        return json_response(
            404, {"error": f"No control endpoint {request.method} {request.path}."}
        )

    def _change_faults(self, body: bytes) -> Response:
        try:
            changes = json.loads(body or b"{}")
            if not isinstance(changes, dict):
                raise FaultSettingsError("Send a JSON object of fault settings.")
            settings = self.faults.update(changes)
        except (json.JSONDecodeError, UnicodeDecodeError, FaultSettingsError) as error:
            return json_response(400, {"error": str(error)})
        return json_response(200, settings.to_json())

    def state(self) -> dict[str, Any]:
        store = self.store
        return {
            "relationships": store.relationship_views(store.relationships.values()),
            "calls": dict(self.calls),
            "write_calls": self.write_calls,
            "duplicate_pairs": store.duplicate_pairs(),
            "contacts": len(store.contacts),
            "faults": self.faults.settings.to_json(),
            "fault_counts": dict(self.fault_counts),
        }

    # --- connections -------------------------------------------------------------------

    async def respond(self, request: Request, from_loopback: bool) -> Response | Drop:
        if request.path in API_PATHS:
            return await self.handle_api(request)
        if request.path.startswith(CONTROL_PREFIX):
            if not from_loopback:
                return json_response(404, {"error": "Not found."})
            return self.handle_control(request)
        return json_response(404, {"error": "The API lives at /v2/."})


class SandboxServer:
    """Serves a Sandbox over HTTP/1.1 with keep-alive on 127.0.0.1."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._connections: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self, port: int = 0) -> int:
        """Listen on 127.0.0.1:port (0 picks a free port); returns the port."""
        self._server = await asyncio.start_server(
            self._serve_connection, HOST, port, limit=MAX_HEAD_BYTES
        )
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._connections):
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._connections.add(writer)
        peer = writer.get_extra_info("peername")
        from_loopback = bool(peer) and peer[0] in LOOPBACK_PEERS
        try:
            await self._serve_requests(reader, writer, from_loopback)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()

    async def _serve_requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, from_loopback: bool
    ) -> None:
        while True:
            try:
                async with asyncio.timeout(IDLE_TIMEOUT_SECONDS):
                    request = await read_request(reader, writer)
            except HttpError as error:
                writer.write(json_response(error.status, {"error": str(error)}).encode(False))
                await writer.drain()
                return
            if request is None:
                return
            response = await self._respond_or_report(request, from_loopback)
            if isinstance(response, Drop):
                return
            writer.write(response.encode(request.keep_alive))
            await writer.drain()
            if not request.keep_alive:
                return

    async def _respond_or_report(self, request: Request, from_loopback: bool) -> Response | Drop:
        try:
            return await self.sandbox.respond(request, from_loopback)
        except Exception:
            # A bug in the sandbox must not look like an injected fault: say so on stderr.
            traceback.print_exc(file=sys.stderr)
            error = {"ErrorCode": "SandboxBug", "ErrorDescription": "See the sandbox's stderr."}
            return json_response(500, error)


async def serve(
    sandbox: Sandbox,
    port: int,
    on_ready: Callable[[int], None],
    stop: asyncio.Event,
) -> None:
    """Serve until `stop` is set; `on_ready(port)` runs once the socket is listening."""
    server = SandboxServer(sandbox)
    on_ready(await server.start(port))
    try:
        await stop.wait()
    finally:
        await server.stop()
