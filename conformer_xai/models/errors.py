"""The errors and warnings of weights loading, and the one-line form of an exception."""

from __future__ import annotations

__all__ = ["WeightsError", "DownloadError", "WeightsWarning", "one_line"]


class WeightsError(ValueError):
    """A checkpoint or download cannot be used (corrupt, wrong architecture, offline, hash)."""


class DownloadError(WeightsError):
    """The network request for a weights file failed; ``reason`` says why in a few words."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class WeightsWarning(UserWarning):
    """Weights were loaded with an adaptation the user should know about (e.g. skipped heads)."""


def one_line(e: BaseException | str, limit: int = 300) -> str:
    """``e``'s text on one line, cut to ``limit`` characters."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
