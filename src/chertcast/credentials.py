"""Where the signing secret comes from — never the campaign file, never the command line.

In order: the ``CHERT_SIGNING_SECRET`` environment variable; the file ``CHERT_SIGNING_SECRET_FILE``
names; the campaign's ``[api] secret_file``; ``~/.config/chertcast/secret`` when it exists.
A secret file must be readable by its owner only (``chmod 600``): one that the group or the
world can read is refused. Cron runs without the user's environment, so unattended runs use a file.
Nothing here ever puts the secret's value in a message.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from chertcast.campaign import DEFAULT_SECRET_FILE, SECRET_ENV, SECRET_FILE_ENV, Campaign
from chertcast.client import Secret
from chertcast.errors import ConfigError

SourceKind = Literal["env", "env_file", "campaign_file", "default_file"]


@dataclass(frozen=True, slots=True)
class SecretSource:
    kind: SourceKind
    path: Path | None = None

    @property
    def seen_by_cron(self) -> bool:
        """Whether a run without this shell's environment (cron) finds the secret the same way."""
        return self.kind in ("campaign_file", "default_file")


def default_secret_file() -> Path:
    return DEFAULT_SECRET_FILE.expanduser()


def locate_secret(campaign: Campaign | None) -> SecretSource | None:
    """Where this run's secret comes from (without reading it); None when nowhere."""
    if os.environ.get(SECRET_ENV, "").strip():
        return SecretSource("env")
    named = os.environ.get(SECRET_FILE_ENV, "").strip()
    if named:
        return SecretSource("env_file", Path(named).expanduser().absolute())
    if campaign is not None and campaign.api.secret_file is not None:
        return SecretSource("campaign_file", campaign.api.secret_file)
    fallback = default_secret_file()
    if fallback.exists():
        return SecretSource("default_file", fallback)
    return None


def read_secret(campaign: Campaign | None = None) -> Secret:
    source = locate_secret(campaign)
    if source is None:
        raise ConfigError(
            f"{SECRET_ENV} is not set: export the signing secret from the Chert console, or for unattended "
            f"runs put it in {DEFAULT_SECRET_FILE} (chmod 600) (or rehearse with --sandbox, which needs none)"
        )
    where = SECRET_ENV if source.kind == "env" else str(source.path)
    try:
        if source.kind == "env":
            return Secret(os.environ[SECRET_ENV].strip())
        assert source.path is not None
        return Secret(read_secret_file(source.path, _named_by(source, campaign)))
    except ConfigError as exc:
        if str(exc).startswith("the signing secret"):  # say where it came from, never what it is
            raise ConfigError(f"{where}: {exc}") from None
        raise


def _named_by(source: SecretSource, campaign: Campaign | None) -> str:
    if source.kind == "env_file":
        return SECRET_FILE_ENV
    if source.kind == "campaign_file" and campaign is not None:
        return f"{campaign.source}: [api] secret_file"
    return "the default secret file"


def read_secret_file(path: Path, named_by: str) -> str:
    """The secret in ``path``, once the file is known to be the owner's alone."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{path}: secret file does not exist (named by {named_by})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the secret file: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path}: the secret file is not a regular file")
    if info.st_mode & 0o077:
        raise ConfigError(
            f"{path}: the secret file is open to group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"run: chmod 600 {path}"
        )
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise ConfigError(f"{path}: the secret file belongs to another user; use a file of your own (chmod 600)")
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        raise ConfigError(f"{path}: cannot read the secret file as UTF-8 text") from None
    if not value or any(ch.isspace() for ch in value):
        raise ConfigError(f"{path}: the secret file must hold the secret alone, on one line")
    return value
