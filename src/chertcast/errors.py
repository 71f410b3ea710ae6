"""Every error chertcast shows a person.

The tree::

    ChertcastError            one line for a person; carries the CLI exit code
    ├── ConfigError           the campaign file, its keys, or the environment (exit 2)
    ├── InputError            a contact sheet, template or suppression file is unusable (exit 2)
    ├── JournalError          the journal cannot be used as it is (exit 2)
    ├── CampaignStopped       the API told us to stop the whole run (exit 3)
    ├── runlock.AlreadyRunning  another run holds this journal (exit 0: that run does the work)
    ├── sync.SyncRunning        another sync holds this journal (exit 0)
    └── sync.SyncFailed         Chert kept refusing a sync; what was fetched is kept (exit 3)

Row-level problems are *data*, not exceptions: see ``chertcast.preflight.Issue``.
No exception message ever contains the API secret: nothing that formats one is given it.
"""

from __future__ import annotations


class ChertcastError(Exception):
    """A problem we can explain in one line; the CLI prints it and exits with ``exit_code``."""

    exit_code = 2


class ConfigError(ChertcastError):
    """The campaign file or the environment is wrong."""


class InputError(ChertcastError):
    """A contact sheet, template or suppression list cannot be used."""


class JournalError(ChertcastError):
    """The journal refuses the run (for example: messages changed since they were attempted)."""


class CampaignStopped(ChertcastError):
    """The API answered in a way that makes every further send pointless."""

    exit_code = 3
