"""chertcast: bulk iMessage campaigns through Chert's Messaging API, exactly once."""

from chertcast.errors import ChertcastError, ConfigError, InputError, JournalError

__version__ = "0.1.0"

__all__ = ["ChertcastError", "ConfigError", "InputError", "JournalError", "__version__"]
