"""Errors whose messages name settings of the Python API, so that the CLI can name its options.

A message such as "pass new_head=True to start new heads" reads well in Python, but a CLI user
knows the setting as ``--new-head``. The library raises :class:`SettingError` (a ValueError) or
:class:`SettingExistsError` (a FileExistsError), and warns with :class:`SettingWarning`, with a template whose ``{field}`` s name
:class:`Setting` s (the keyword arguments): ``str(exc)`` spells them the Python way, :meth:`SettingMessage.render` with
any other spelling (the CLI passes its own). Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Setting", "SettingError", "SettingExistsError", "SettingMessage", "SettingWarning",
           "python_spelling"]

_NO_VALUE = object()


@dataclass(frozen=True)
class Setting:
    """A setting named in a message: a parameter, with a value or a placeholder or neither.

    Attributes:
        name: The Python parameter (``"new_head"``).
        value: Its value in the message (``True``, ``"embedded"``, ``10``), if any.
        placeholder: A stand-in for a value the reader chooses (``"PATH"``, ``"N"``), if any.
    """

    name: str
    value: Any = _NO_VALUE
    placeholder: str | None = None

    @property
    def has_value(self) -> bool:
        return self.value is not _NO_VALUE


def python_spelling(setting: Setting) -> str:
    """``name=value`` (``new_head=True``, ``weights='embedded'``), ``name=PLACEHOLDER`` or
    ``name``."""
    if setting.has_value:
        return f"{setting.name}={setting.value!r}"
    if setting.placeholder is not None:
        return f"{setting.name}={setting.placeholder}"
    return setting.name


class SettingMessage:
    """A message template with :class:`Setting` fields, rendered with a spelling of settings."""

    template: str
    settings: dict[str, Setting]

    def _init_message(self, template: str, settings: dict[str, Setting]) -> str:
        self.template = template
        self.settings = settings
        return self.render()

    def render(self, spell: Callable[[Setting], str] = python_spelling) -> str:
        """The message with every setting spelt by ``spell`` (Python's by default).

        Only the ``{field}`` of each setting is replaced, so paths and values holding braces
        need no escaping."""
        text = self.template
        for key, setting in self.settings.items():
            text = text.replace("{" + key + "}", spell(setting))
        return text


class SettingError(SettingMessage, ValueError):
    """A ValueError naming settings: ``SettingError("pass {new_head}", new_head=Setting(
    "new_head", True))`` reads "pass new_head=True"."""

    def __init__(self, template: str, **settings: Setting) -> None:
        ValueError.__init__(self, self._init_message(template, settings))


class SettingExistsError(SettingMessage, FileExistsError):
    """A FileExistsError naming settings (``"... exists; pass {force} to replace it"``)."""

    def __init__(self, template: str, **settings: Setting) -> None:
        FileExistsError.__init__(self, self._init_message(template, settings))


class SettingWarning(SettingMessage, UserWarning):
    """A UserWarning naming settings (``"... guessed; pass {num_heads} if ..."``); warn with an
    instance (``warnings.warn(SettingWarning(...))``) so that the CLI can render it."""

    def __init__(self, template: str, **settings: Setting) -> None:
        UserWarning.__init__(self, self._init_message(template, settings))
