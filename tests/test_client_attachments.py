"""The client reads every error shape; attachments are uploaded once per campaign."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from chertcast.client import parse_response
from chertcast.journal import Journal
from chertcast.sandbox import DEFAULT_SECRET, SandboxModel, SandboxServer
from tests.helpers import run_process, write_campaign, write_contacts


def response(status: int, body: bytes | str, headers: dict[str, str] | None = None) -> httpx.Response:
    content = body.encode() if isinstance(body, str) else body
    return httpx.Response(status, content=content, headers=headers or {})


def test_flat_envelope_and_junk_error_bodies() -> None:
    flat = parse_response(
        response(
            503,
            '{"status":"failed","code":4002,"message":"busy","retryable":true,"retry_after":30,"trace_id":"t1"}',
            {"retry-after": "30"},
        )
    )
    assert (flat.kind, flat.code, flat.retryable, flat.retry_after) == ("error", 4002, True, 30.0)
    envelope = parse_response(
        response(
            401,
            '{"success":false,"error":{"status":401,"code":2004,"message":"bad","retryable":false},"trace_id":"t2"}',
        )
    )
    assert (envelope.code, envelope.retryable) == (2004, False)
    html = parse_response(response(502, "<html>Bad gateway</html>", {"x-trace-id": "t3"}))
    assert html.kind == "error" and html.retryable and html.code is None
    header_only = parse_response(
        response(429, '{"status":"failed","code":1007,"message":"slow"}', {"retry-after": "7"})
    )
    assert header_only.retryable and header_only.retry_after == 7.0  # no retryable field: 429 is retryable
    sent = parse_response(response(200, '{"status":"sent","message_id":"m","lead_id":"l","lead_created":true}'))
    assert sent.delivered and sent.message_id == "m" and sent.lead_created is True
    odd_success = parse_response(response(200, '{"ok":true}'))
    assert odd_success.kind == "error" and odd_success.retryable  # safe: the key makes a retry harmless


def test_retry_after_is_never_endless_or_negative() -> None:
    """A proxy or a buggy server may say `inf`, `nan`, a year or a negative number: no wait is endless."""
    cases = {"inf": 86_400.0, "1e12": 86_400.0, "-5": 0.0, "nan": None, "2.5": 2.5}
    for given, expected in cases.items():
        body = '{"status":"failed","code":1007,"message":"slow","retryable":true}'
        outcome = parse_response(response(429, body, {"retry-after": given}))
        assert outcome.retry_after == expected, given
    in_body = '{"status":"failed","code":4002,"message":"busy","retryable":true,"retry_after":1e308}'
    assert parse_response(response(503, in_body)).retry_after == 86_400.0
    body = '{"status":"failed","code":1007,"message":"slow","retryable":true}'
    a_year_on = parse_response(response(429, body, {"retry-after": "Fri, 31 Dec 2100 23:59:59 GMT"}))
    assert a_year_on.retry_after == 86_400.0  # an HTTP date far ahead is capped like a number
    past = parse_response(response(429, body, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    assert past.retry_after == 0.0


def test_local_file_uploaded_once_and_ids_in_every_shape(tmp_path: Path) -> None:
    model = SandboxModel()
    with SandboxServer(model) as server:
        headers = {"authorization": f"Bearer {DEFAULT_SECRET}"}
        created = httpx.post(
            f"{server.base_url}/attachments",
            headers=headers,
            json={"filename": "p.heic", "content_type": "image/heic", "size_bytes": 2},
        ).json()
        httpx.put(created["upload_url"], content=b"ok", headers={**headers, "content-type": "image/heic"})
        existing = created["attachment_id"]
        (tmp_path / "brochure.pdf").write_bytes(b"%PDF-1.4 tiny")
        contacts = write_contacts(tmp_path / "contacts.csv", 6)
        extra = (
            f'[send]\nattachments = ["brochure.pdf", "{existing}", {{id = "{existing}"}}, '
            f'{{attachment_id = "{existing}", live_photo = true}}]\n'
        )
        campaign = write_campaign(tmp_path, contacts, extra=extra)
        env = {**os.environ, "CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}
        first = run_process("send", campaign, "--yes", "--limit", "3", env=env)
        assert first.returncode == 0, first.stdout + first.stderr
        uploads_after_first = len(model._attachments)
        second = run_process("send", campaign, "--yes", env=env)
        assert second.returncode == 0, second.stdout + second.stderr
        assert len(model._attachments) == uploads_after_first == 2  # the pre-made one + brochure.pdf, once
    deliveries = model.deliveries()
    assert len(deliveries) == 6
    uploaded = next(a for a in deliveries[0].attachments if a != existing)
    assert all(d.attachments == (uploaded, existing, existing, existing) for d in deliveries)
    with Journal(tmp_path / "campaign.journal.sqlite", "test-campaign", readonly=True) as journal:
        assert (
            journal.attachment_id(
                str((tmp_path / "brochure.pdf").resolve()),
                __import__("hashlib").sha256(b"%PDF-1.4 tiny").hexdigest(),
                server.base_url,
            )
            == uploaded
        )


def test_missing_attachment_file_is_a_row_error(tmp_path: Path) -> None:
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("phone,files\n4155550100,missing.png\n4155550101,\n")
    campaign = write_campaign(tmp_path, contacts, body="Hi", extra='[columns]\nattachments = "files"\n')
    result = run_process("check", campaign)
    assert result.returncode == 1 and "attachment file 'missing.png' does not exist" in result.stdout


def test_an_upload_url_off_the_apis_host_never_gets_the_secret() -> None:
    """A misdirected or hostile upload_url (another host, scheme or port) is refused before any byte goes."""
    import anyio

    from chertcast.client import ChertClient, Secret, UnsafeUploadURL

    seen: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "uploaded"})

    async def put(url: str) -> int:
        async with httpx.AsyncClient(transport=httpx.MockTransport(server)) as http:
            client = ChertClient(http, "https://console.trychert.com/api/v1", Secret("s3cr3t-value"))
            return await client.put_bytes(url, b"bytes", "image/png")

    for elsewhere in (
        "https://uploads.example.net/a/1",
        "http://console.trychert.com/api/v1/attachments/a/upload",
        "https://console.trychert.com:8443/api/v1/attachments/a/upload",
        "not a url",
    ):
        try:
            anyio.run(put, elsewhere)
        except UnsafeUploadURL as exc:
            assert "s3cr3t" not in str(exc) and "refusing to send the secret" in str(exc)
        else:
            raise AssertionError(f"uploaded to {elsewhere}")
    assert seen == []
    assert anyio.run(put, "https://console.trychert.com/api/v1/attachments/a/upload") == 200
    assert [r.headers["authorization"] for r in seen] == ["Bearer s3cr3t-value"]
