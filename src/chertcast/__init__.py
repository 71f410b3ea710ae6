"""chertcast: bulk iMessage campaigns through Chert's Messaging API, exactly once.

Every command is one call here (``chertcast.api``); each result's ``as_json()`` is what the
command's ``--json`` prints.
"""

from chertcast._version import __version__
from chertcast.api import (
    CheckResult,
    Endpoint,
    ReportResult,
    SendOptions,
    SendOutcome,
    StatusResult,
    SyncOutcome,
    asend,
    check,
    report,
    send,
    status,
    sync,
)
from chertcast.client import Secret
from chertcast.errors import CampaignStopped, ChertcastError, ConfigError, InputError, JournalError

__all__ = [
    "CampaignStopped",
    "CheckResult",
    "ChertcastError",
    "ConfigError",
    "Endpoint",
    "InputError",
    "JournalError",
    "ReportResult",
    "Secret",
    "SendOptions",
    "SendOutcome",
    "StatusResult",
    "SyncOutcome",
    "__version__",
    "asend",
    "check",
    "report",
    "send",
    "status",
    "sync",
]
