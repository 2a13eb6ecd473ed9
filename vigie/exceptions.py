"""Error families shared by the edge agent and the hub.

Each error carries the facts as attributes so that callers (the hub's
quarantine, the CLI) can report them without parsing messages.
"""

from __future__ import annotations

__all__ = ["ConfigError", "EnrolmentError", "ModelError", "VigieError", "WireError"]


class VigieError(Exception):
    """Root of every error Vigie raises on purpose."""


class WireError(VigieError):
    """A message or topic does not follow the wire protocol.

    Attributes:
        field: dotted path of the offending field (``"<payload>"`` for the
            whole payload, ``"<topic>"`` for the topic).
        reason: what is wrong, in words an operator can act on.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class ConfigError(VigieError):
    """A configuration value is missing or wrong; the message says which and how to fix it."""


class ModelError(VigieError):
    """A detector model cannot be found, verified or loaded."""


class EnrolmentError(VigieError):
    """An enrolment or certificate request was refused; the message says why and what to do."""
