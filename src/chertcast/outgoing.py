"""What will be sent: a sendable row as the engine sees it, its key and phone never optional.

A ``Recipient`` describes any row of the sheet, so its phone, body and key may be missing (a row
with an error has none). ``Outgoing.of`` is the one place that checks a row is sendable (phone,
body and key all there); past it, the scheduler and the engine hold values that cannot lack
them.
"""

from __future__ import annotations

from dataclasses import dataclass

from chertcast.preflight import AttachmentRef, Recipient


@dataclass(frozen=True, slots=True)
class Outgoing:
    key: str  # the idempotency key: the journal's primary key and Chert's dedup key
    phone: str  # E.164
    recipient: Recipient  # the row it came from (its /send payload is built from it)

    @classmethod
    def of(cls, recipient: Recipient) -> Outgoing:
        """The row as something to send; a row without a phone, body or key is a bug upstream."""
        if recipient.key is None or recipient.phone is None or recipient.body is None:
            raise ValueError(f"row {recipient.row} is not sendable ({recipient.status}): it has no phone, body or key")
        return cls(recipient.key, recipient.phone, recipient)

    @property
    def phone_line_id(self) -> str | None:
        return self.recipient.phone_line_id

    @property
    def effect(self) -> str | None:
        return self.recipient.effect

    @property
    def attachments(self) -> tuple[AttachmentRef, ...]:
        return self.recipient.attachments

    @property
    def timezone(self) -> str | None:
        return self.recipient.timezone
