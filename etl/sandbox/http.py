"""A small, strict HTTP/1.1 server side on asyncio streams: read a request, write a response.

Enough of RFC 9112 for API clients: request line and headers, bodies by Content-Length or
chunked transfer coding, `Expect: 100-continue`, and persistent connections (HTTP/1.1 keeps
the connection unless `Connection: close`; HTTP/1.0 closes unless `keep-alive`). A malformed
request raises HttpError, which the server answers and then closes the connection.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 32 * 1024 * 1024
REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}


class HttpError(Exception):
    """A request the parser cannot accept; answered with `status`, then the connection closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)

    def encode(self, keep_alive: bool) -> bytes:
        lines = [
            f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Unknown')}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


async def read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> Request | None:
    """The next request on the connection, or None if the client closed it between requests."""
    head = await _read_head(reader)
    if head is None:
        return None
    request = _parse_head(head)
    if request.headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.body = await _read_body(reader, request.headers)
    return request


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if error.partial.strip():
            raise HttpError(400, "The connection closed in the middle of a request.") from None
        return None
    except asyncio.LimitOverrunError:
        raise HttpError(431, "The request head is too large.") from None
    # A client may send stray empty lines before a request line (RFC 9112 section 2.2).
    return head.lstrip(b"\r\n")


def _parse_head(head: bytes) -> Request:
    try:
        text = head.decode("latin-1")
        request_line, *header_lines = text.rstrip("\r\n").split("\r\n")
        method, target, version = request_line.split(" ")
    except ValueError:
        raise HttpError(400, "Malformed request line.") from None
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(505, f"{version} is not supported.")
    return Request(method, target, version, _parse_headers(header_lines))


def _parse_headers(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise HttpError(400, f"Malformed header line {line!r}.")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    transfer_encoding = headers.get("transfer-encoding", "").lower()
    if transfer_encoding:
        if "content-length" in headers:
            raise HttpError(400, "Content-Length and Transfer-Encoding together.")
        if transfer_encoding != "chunked":
            raise HttpError(501, f"Transfer-Encoding {transfer_encoding} is not supported.")
        return await _read_chunked(reader)
    length_text = headers.get("content-length", "0")
    if not length_text.isascii() or not length_text.isdigit():
        raise HttpError(400, "Content-Length must be a whole number.")
    length = int(length_text)
    if length > MAX_BODY_BYTES:
        raise HttpError(413, "The request body is too large.")
    return await _read_exactly(reader, length)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await _read_line(reader)
        size_text = size_line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise HttpError(400, "Malformed chunk size.") from None
        if size == 0:
            break
        if len(body) + size > MAX_BODY_BYTES:
            raise HttpError(413, "The request body is too large.")
        body += await _read_exactly(reader, size)
        if await _read_line(reader):
            raise HttpError(400, "A chunk must end with CRLF.")
    while await _read_line(reader):  # trailer fields, ignored
        pass
    return bytes(body)


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readuntil(b"\r\n")
    except asyncio.IncompleteReadError:
        raise HttpError(400, "The connection closed in the middle of a request.") from None
    except asyncio.LimitOverrunError:
        raise HttpError(400, "A chunk line is too long.") from None
    return line[:-2]


async def _read_exactly(reader: asyncio.StreamReader, size: int) -> bytes:
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise HttpError(400, "The connection closed in the middle of a request.") from None
