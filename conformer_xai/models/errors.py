"""The errors and warnings of weights loading, and the one-line form of an exception."""

from __future__ import annotations

from ..errors import Setting, SettingMessage, SettingWarning

__all__ = ["WeightsError", "DownloadError", "WeightsWarning", "one_line"]


class WeightsError(SettingMessage, ValueError):
    """A checkpoint or download cannot be used (corrupt, wrong architecture, offline, hash).

    Built from a plain message or, like :class:`~conformer_xai.errors.SettingError`, from a
    template naming settings (``WeightsError("... pass {new_head}", new_head=Setting(
    "new_head", True))``), which the CLI renders with its option names.
    """

    def __init__(self, template: str, **settings: Setting) -> None:
        ValueError.__init__(self, self._init_message(template, settings))


class DownloadError(WeightsError):
    """The network request for a weights file failed; ``reason`` says why in a few words."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class WeightsWarning(SettingWarning):
    """Weights were loaded with an adaptation the user should know about (e.g. skipped heads)."""


def one_line(e: BaseException | str, limit: int = 300) -> str:
    """``e``'s text on one line, cut to ``limit`` characters."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
