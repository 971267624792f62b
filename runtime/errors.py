"""The project's error types: one base class, :class:`KilnError`, that carries the ``kiln`` exit status.

Every error tensorkiln raises for something a person can fix (a bad input, a bad file, a missing optional backend,
an export that breaks the tolerance) derives from :class:`KilnError`, and its message says what went wrong and what
to do. The CLI prints the message as one line and exits with ``exit_code``; anything else is a bug and keeps its
traceback.

Exit statuses: ``2`` for a request that cannot be carried out as given (bad input, bad file, missing backend),
``1`` for a check that ran and failed (verification, parity). Each layer defines its own subclasses beside the code
that raises them (``ConfigError`` and ``CheckpointError`` in ``reference``, ``ExportError`` and
``VerificationError`` in ``export``); the ones here are the runtime's.

The subclasses also derive from the builtin they specialise (``ValueError`` for bad values, ``RuntimeError`` for
environment problems), so code that caught those before keeps working.
"""

from __future__ import annotations

from typing import ClassVar

#: Exit status of a request that cannot be carried out as given.
EXIT_USAGE = 2
#: Exit status of a check that ran and failed.
EXIT_CHECK_FAILED = 1


class KilnError(Exception):
    """Base of every error tensorkiln raises for people to read; ``exit_code`` is the CLI's exit status."""

    exit_code: ClassVar[int] = EXIT_USAGE


class UsageError(KilnError, ValueError):
    """An option or argument that cannot be used as given (a bad value, a folder in the wrong place)."""


class ManifestError(KilnError, ValueError):
    """A manifest that cannot be read: missing, malformed, from a newer format, or not matching its files."""


class RuntimeInputError(KilnError, ValueError):
    """Inputs a session cannot run: a wrong name, dtype, rank or shape, a value out of range, or too long."""


class BackendUnavailableError(KilnError, RuntimeError):
    """The backend (or execution provider) asked for is not installed or cannot run this export."""


class CheckFailed(KilnError, RuntimeError):
    """A check ran and the result breaks the tolerance policy (exit status 1)."""

    exit_code: ClassVar[int] = EXIT_CHECK_FAILED


class TokenizerUnavailableError(KilnError, RuntimeError):
    """Text was given but the export carries no tokenizer, or HF's ``tokenizers`` library is not installed."""


class KilnWarning(UserWarning):
    """Something a person should know that does not stop the command (a folder restored or cleaned up, a truncated
    input, a tokenizer that disagrees with config.json); the CLI prints it as one ``kiln: warning: ...`` line."""


__all__ = ["BackendUnavailableError", "CheckFailed", "EXIT_CHECK_FAILED", "EXIT_USAGE", "KilnError", "KilnWarning",
           "ManifestError", "RuntimeInputError", "TokenizerUnavailableError", "UsageError"]
