"""Shared pieces of the benchmarks: a sandbox in its own process, generated campaigns."""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from chertcast import Endpoint, Secret
from chertcast.sandbox import DEFAULT_SECRET

RESULTS = Path(__file__).parent / "results"
AREAS = ("212", "415", "646", "312", "617", "206", "303", "512", "213", "305")


def phone(i: int) -> str:
    area, rest = AREAS[i % len(AREAS)], i // len(AREAS)
    style = i % 3
    local = f"{555 + rest // 10_000}{rest % 10_000:04d}"
    if style == 0:
        return f"({area}) {local[:3]}-{local[3:]}"
    if style == 1:
        return f"+1 {area} {local[:3]} {local[3:]}"
    return f"{area}.{local[:3]}.{local[3:]}"


UNPLANNED = "\n[capacity]\nenabled = false\n[quiet_hours]\nenabled = false\n"


def write_campaign(
    directory: Path, rows: int, *, duplicate_share: float = 0.0, extra: str = "", seed: int = 1, planned: bool = False
) -> Path:
    """A CSV of `rows` leads (some numbers repeated) and a campaign file using it.

    Unless ``planned``, capacity planning and quiet hours are off: these benchmarks measure
    pacing and throughput against a sandbox with unlimited lines, at any hour."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    contacts = directory / "contacts.csv"
    with contacts.open("w", encoding="utf-8") as handle:
        handle.write("Phone,First Name,City\n")
        for i in range(rows):
            n = rng.randrange(i) if i and rng.random() < duplicate_share else i
            handle.write(f"{phone(n)},Lead{i},City{i % 97}\n")
    campaign = directory / "campaign.toml"
    campaign.write_text(
        'id = "bench"\ncontacts = "contacts.csv"\n'
        'body = "Hi {{ first_name }}, a quick hello from {{ city }}."\n' + extra + ("" if planned else UNPLANNED),
        encoding="utf-8",
    )
    return campaign


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ExternalSandbox:
    """`chertcast sandbox` in its own process, so client and server don't share a loop."""

    def __init__(self, *flags: str) -> None:
        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.root}/api/v1"
        args = [sys.executable, "-m", "chertcast", "sandbox", "--port", str(self.port), *flags]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{self.root}/_sandbox/stats", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("sandbox did not start") from None
                time.sleep(0.05)

    def deliveries(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.root}/_sandbox/deliveries", timeout=60).json()["deliveries"])

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.root}/_sandbox/stats", timeout=10).json())

    def env(self) -> dict[str, str]:
        """For a `chertcast` process: the CLI is the one place that reads CHERT_*."""
        return {**os.environ, "CHERT_BASE_URL": self.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}

    def endpoint(self) -> Endpoint:
        """For a library call: the endpoint is passed in, the environment untouched."""
        return Endpoint(self.base_url, Secret(DEFAULT_SECRET))

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@contextlib.contextmanager
def sandbox(*flags: str) -> Iterator[ExternalSandbox]:
    server = ExternalSandbox(*flags)
    try:
        yield server
    finally:
        server.close()


def max_in_any_second(times: list[float]) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


FAULT_MIX = ("--error-500", "0.05", "--rate-limited", "0.05", "--retry-after", "1", "--drop-after", "0.02")


def save(name: str, results: dict[str, Any]) -> dict[str, Any]:
    """Write benchmarks/results/<name>.json and print it."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return results


def machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "python": sys.version.split()[0], "platform": sys.platform}
