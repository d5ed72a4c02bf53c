"""The embedded models' weights: fp16 safetensors shipped as package data, read as float32."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from ..errors import Setting, SettingError
from .catalog import EMBEDDED_MODELS
from .errors import WeightsError, one_line

__all__ = ["embedded_resource", "load_embedded_state_dict", "read_embedded"]


def embedded_resource(name: str, root=None):
    """The shipped file of an embedded model (``root``, a directory, replaces the package's)."""
    root = resources.files("conformer_xai") / "weights" if root is None else root
    return root / f"{name}.safetensors"


def load_embedded_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The shipped state dict of an embedded model (package data), cast to float32.

    Raises:
        ValueError: ``name`` is not one of :data:`EMBEDDED_MODELS`.
        WeightsError: The file is missing from the installed package or unreadable.
    """
    return read_embedded(name)


def read_embedded(name: str, root=None) -> dict[str, torch.Tensor]:
    """The shipped fp16 state dict of an embedded model, cast to float32.

    ``root`` (a directory) replaces the package's ``weights/`` folder; None reads package data.
    """
    if name not in EMBEDDED_MODELS:
        raise SettingError("{weights}" f" exists only for {', '.join(EMBEDDED_MODELS)}; "
                           f"got {name!r}", weights=Setting("weights", "embedded"))
    resource = embedded_resource(name, None if root is None else Path(root))
    if not resource.is_file():
        raise WeightsError(f"the embedded weights of {name} are missing from the installed "
                           f"package ({resource}); reinstall conformer-xai")
    from safetensors.torch import load

    try:
        raw = load(resource.read_bytes())
    except Exception as e:
        raise WeightsError(f"cannot read the embedded weights {resource}: {one_line(e)}") from e
    return {k: (v.float() if v.is_floating_point() else v) for k, v in raw.items()}
