"""The starlette adapter over ``SandboxModel``: HTTP in, model call, HTTP out."""

from __future__ import annotations

import secrets
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from chertcast.sandbox.model import Reply, SandboxModel

API = "/api/v1"


class ConnectionDropped(Exception):
    """Raised by the app to make the server close the connection without a full response."""


def _respond(reply: Reply) -> Response:
    headers = {"X-Trace-ID": str(reply.body.get("trace_id") or secrets.token_hex(8))}
    headers.update(reply.headers)
    return JSONResponse(reply.body, status_code=reply.status, headers=headers)


class _DroppingResponse(Response):
    """Starts a response, then fails: uvicorn closes the socket mid-response."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]})
        raise ConnectionDropped("sandbox fault: connection dropped")


def create_app(model: SandboxModel) -> Starlette:
    """The sandbox as an ASGI app (for uvicorn, or for httpx in-process)."""

    async def send(request: Request) -> Response:
        model.enter()
        try:
            latency = model.latency_s()
            if latency:
                await anyio.sleep(latency)
            raw = await request.body()
            reply = model.send(raw, request.headers)
            if reply.drop is not None:
                return _DroppingResponse()
            return _respond(reply)
        finally:
            model.leave()

    async def attachments(request: Request) -> Response:
        raw = await request.body()
        refused = model.authenticate(request.headers, raw, envelope=True)
        if refused is not None:
            return _respond(refused)
        base = str(request.base_url).rstrip("/") + API
        return _respond(model.create_attachment(raw, base, request.headers.get("content-type", "")))

    async def upload(request: Request) -> Response:
        raw = await request.body()
        refused = model.authenticate(request.headers, b"", envelope=True)
        if refused is not None:
            return _respond(refused)
        return _respond(model.upload(request.path_params["attachment_id"], request.headers, raw))

    async def lookup_latency() -> None:
        latency = model.latency_s()  # lookups take as long as sends (the same faults apply)
        if latency:
            await anyio.sleep(latency)

    async def message(request: Request) -> Response:
        await lookup_latency()
        refused = model.authenticate(request.headers, b"", envelope=True)
        return _respond(refused or model.message(request.path_params["message_id"]))

    async def events(request: Request) -> Response:
        await lookup_latency()
        refused = model.authenticate(request.headers, b"", envelope=True)
        return _respond(refused or model.events(request.query_params))

    async def replies(request: Request) -> Response:
        return JSONResponse({"replies": model.replies()})

    async def phone_numbers(request: Request) -> Response:
        refused = model.authenticate(request.headers, b"", envelope=True)
        return _respond(refused or model.phone_numbers())

    async def deliveries(request: Request) -> Response:
        return JSONResponse({"deliveries": [d.as_json() for d in model.deliveries()]})

    async def stats(request: Request) -> Response:
        return JSONResponse(model.stats())

    async def reset(request: Request) -> Response:
        model.reset()
        return JSONResponse({"ok": True})

    routes = [
        Route(f"{API}/send", send, methods=["POST"]),
        Route(f"{API}/attachments", attachments, methods=["POST"]),
        Route(f"{API}/attachments/{{attachment_id}}/upload", upload, methods=["PUT"]),
        Route(f"{API}/messages/{{message_id}}", message, methods=["GET"]),
        Route(f"{API}/phone-numbers", phone_numbers, methods=["GET"]),
        Route(f"{API}/events", events, methods=["GET"]),
        Route("/_sandbox/replies", replies, methods=["GET"]),
        Route("/_sandbox/deliveries", deliveries, methods=["GET"]),
        Route("/_sandbox/stats", stats, methods=["GET"]),
        Route("/_sandbox/reset", reset, methods=["POST"]),
    ]

    async def no_route(request: Request, exc: Exception) -> Response:
        """An unknown path or method answers JSON with a trace id too: Chert's envelope (2011, or 4099
        for a wrong method) under the API's prefix; elsewhere on the host (not the API, as a wrong
        base URL path would reach) a plain web 404 with no Chert code, which no client can read as
        an answer about its message."""
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        allow = exc.headers.get("Allow") if isinstance(exc, HTTPException) and exc.headers else None
        extra = {"Allow": allow} if allow else {}
        path = request.url.path
        if path.startswith((f"{API}/", "/_sandbox/")) or path == API:
            reply = model.route_error(status, request.method, path)
            return _respond(Reply(reply.status, reply.body, {**reply.headers, **extra}))
        phrase = "Method Not Allowed" if status == 405 else "Not Found"
        return _respond(Reply(status, {"detail": phrase}, extra))

    return Starlette(routes=routes, exception_handlers={HTTPException: no_route})


class _DroppingASGITransport(httpx.ASGITransport):
    """In-process transport that turns a sandbox drop into the error a socket would give."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except ConnectionDropped as exc:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a complete response", request=request
            ) from exc


def sandbox_transport(model: SandboxModel, **kwargs: Any) -> httpx.AsyncBaseTransport:
    """An httpx transport that talks to the sandbox in-process (no socket)."""
    return _DroppingASGITransport(app=create_app(model), **kwargs)
