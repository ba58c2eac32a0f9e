"""Errors a user can act on. The CLI prints them as one line (no traceback) and exits with status 2.

Messages name the file or value at fault and say what to do about it.
"""


class GsvError(ValueError):
    """Base class of every user-facing gsvkit error."""


class CheckpointError(GsvError):
    """A weight file that is missing, truncated, corrupted, of an unsupported version, or of the wrong kind."""


class AudioError(GsvError):
    """Audio that cannot be read or used (unreadable, empty, silent, too short or too long)."""


class TextError(GsvError):
    """Text that cannot be turned into phones (empty, unsupported language, nothing pronounceable)."""


class DataError(GsvError):
    """A dataset, manifest or transcript file that is malformed or inconsistent."""


class SyntheticAudioError(AudioError):
    """Audio that carries a speech-synthesis watermark, offered where recorded speech is required."""


class ConsentError(GsvError):
    """Cloning a voice without the speaker's consent on record (a declaration or a voice's consent record)."""


class AuthError(GsvError):
    """A server key set-up that would leave the server open (empty keys, duplicates, unknown voices)."""


class ConfigError(GsvError):
    """A config file or value that cannot be used; the message names the file and the field."""


class UsageError(GsvError):
    """A command-line flag whose value cannot work (a negative thread count, a port above 65535, ...)."""


class LimitError(GsvError):
    """Input over one of the budgets in `gsvkit.limits`; the message names the limit and how to raise it."""


class DiskFullError(GsvError, OSError):
    """A write that ran out of disk space; nothing partial is left under the final name."""
