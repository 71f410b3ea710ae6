"""Serve the sandbox with uvicorn: in the foreground (CLI) or on a loopback thread (tests)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType

import uvicorn

from chertcast.sandbox.app import ConnectionDropped, create_app
from chertcast.sandbox.model import SandboxModel


class _QuietDrops(logging.Filter):
    """Injected connection drops are the point, not an error worth a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while exc is not None:
            if isinstance(exc, ConnectionDropped):
                return False
            exc = exc.__cause__ or exc.__context__
        return "ASGI callable returned without completing response" not in record.getMessage()


def _config(model: SandboxModel, log_level: str) -> uvicorn.Config:
    logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
    return uvicorn.Config(
        create_app(model),
        log_level=log_level,
        access_log=False,
        lifespan="off",
        backlog=2048,
        timeout_keep_alive=30,
    )


def serve_forever(model: SandboxModel, sock: socket.socket) -> None:
    """Serve on an already bound socket until Ctrl-C (the ``chertcast sandbox`` command)."""
    uvicorn.Server(_config(model, "warning")).run(sockets=[sock])


def bind(host: str, port: int) -> socket.socket:
    """Bind and listen first, so a busy port fails before anything is announced."""
    return _bind(host, port)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class SandboxServer:
    """The sandbox on an ephemeral loopback port, in a background thread.

    >>> with SandboxServer(SandboxModel()) as server:  # doctest: +SKIP
    ...     server.base_url  # 'http://127.0.0.1:54321/api/v1'
    """

    def __init__(self, model: SandboxModel | None = None, host: str = "127.0.0.1") -> None:
        self.model = model or SandboxModel()
        self._host = host
        self._server = uvicorn.Server(_config(self.model, "critical"))
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def root_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/api/v1"

    def start(self) -> SandboxServer:
        sock = _bind(self._host, 0)
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the sandbox server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
