"""``features_only=True`` for Conformer: a timm feature wrapper over the two branches' stage ends.

timm's own wrappers assume one stream of modules in execution order (``FeatureListNet``) or a
``forward_intermediates`` that returns one tensor per index (``FeatureGetterNet``); Conformer has
two branches and its ``forward_intermediates`` returns both per block. :class:`ConformerFeatures`
is the default ``feature_cls`` of every registered Conformer: it calls
:meth:`Conformer.forward_stage_features`, stops after the last requested stage, and traces with
``torch.fx``. ``feature_cls="hook"`` and ``"fx"`` (timm's hook and FX wrappers) also work for the
CNN branch, from the same ``feature_info``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from timm.models import FeatureInfo
from torch import nn

from ..names import BRANCHES

if TYPE_CHECKING:  # the model file imports this one when it builds a backbone
    from .conformer import Conformer

__all__ = ["ConformerFeatures", "FEATURE_BRANCHES"]

#: Branches ``features_only`` can return: the CNN's maps, or the transformer's tokens as maps.
FEATURE_BRANCHES = BRANCHES


class ConformerFeatures(nn.Module):
    """A Conformer as a backbone: a list of (B, C, h, w) maps, described by ``feature_info``.

    Args:
        model: The Conformer (its classifiers are removed).
        out_indices: Stage ends to return (0-based; CNN: strides 4, 8, 16, 32; transformer:
            the blocks ending stages 1, 2 and 3, at stride ``patch_size``).
        branch: ``"cnn"`` (default) or ``"transformer"`` (patch tokens as NCHW maps).
        output_fmt: Only ``"NCHW"``.
    """

    def __init__(self, model: Conformer, out_indices: Sequence[int] | int = (0, 1, 2, 3),
                 branch: str = "cnn", output_fmt: str = "NCHW") -> None:
        super().__init__()
        if branch not in FEATURE_BRANCHES:
            raise ValueError(f"feature_branch must be one of {', '.join(FEATURE_BRANCHES)}, "
                             f"got {branch!r}")
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        info = model.stage_feature_info(branch)
        if isinstance(out_indices, int):  # timm's convention: the last n stage ends
            out_indices = tuple(range(len(info) - out_indices, len(info)))
        out_indices = tuple(i + len(info) if i < 0 else i for i in out_indices)
        for i in out_indices:
            if not 0 <= i < len(info):
                raise ValueError(f"out_indices {i} out of range for the {branch} branch; "
                                 f"accepted: 0..{len(info) - 1}")
        model.reset_classifier(0)
        self.model = model
        self.branch = branch
        self.out_indices = out_indices
        self.feature_info = FeatureInfo(info, out_indices)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_stage_features(x, self.out_indices, self.branch)
