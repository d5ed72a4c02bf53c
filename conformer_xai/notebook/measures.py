"""Small measurements the notebooks report: shares per block, accuracy, FCU down's share."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

BlocksOf = Callable[[Any, str], Iterable[int]]


def unit_range(m: torch.Tensor) -> torch.Tensor:
    """``m`` min-max scaled to [0, 1]; a constant map becomes all zeros."""
    m = m - m.min()
    top = m.max()
    return m / top if top > 0 else m


def deepest_nonzero_block(exp: Any, method: str, branch: str, head: str | None = None) -> int:
    """The deepest block whose ``method`` map on ``branch`` (for ``head``) is not all zero.

    A head can have no gradient path to a block (the transformer head to the CNN branch's last
    block): its map there is zero by construction.

    Raises:
        ValueError: Every block's map is zero, or the explanation has none.
    """
    blocks = [k for k in exp.blocks(method, branch, head)
              if bool(exp.get(method, branch, k, head=head).max() > 0)]
    if not blocks:
        raise ValueError(f"no block with a non-zero {method} map on the {branch} branch"
                         + ("" if head is None else f" for the {head} head"))
    return max(blocks)


def paper_blocks(exp: Any, branch: str) -> list[int]:
    """The paper figure's blocks of a branch: a shallow one and the last (feature maps)."""
    from conformer_xai.plot import default_blocks

    return list(default_blocks(len(exp.blocks("features", branch)), branch))


def part_body_off_rows(columns: Sequence[tuple[str, Any, str]],
                       masks: tuple[torch.Tensor, torch.Tensor],
                       blocks_of: BlocksOf | None = None) -> list[dict[str, Any]]:
    """Part / body / off shares of the feature maps, one row per column and block.

    Args:
        columns: ``(label, explanation, branch)`` per model branch.
        masks: Object and part masks ``(B, H, W)`` of the explained images.
        blocks_of: ``(explanation, branch) -> blocks``; default: every block with feature maps.

    Returns:
        Rows with keys "model / branch", "block", "part", "body", "off" (means over images).
    """
    from conformer_xai.metrics import part_body_off_shares

    object_mask, part_mask = masks
    rows = []
    for label, exp, branch in columns:
        ks = (exp.blocks("features", branch) if blocks_of is None
              else blocks_of(exp, branch))
        for k in ks:
            s = part_body_off_shares(exp.get("features", branch, k), object_mask, part_mask)
            rows.append({"model / branch": label, "block": k, "part": float(s.part.nanmean()),
                         "body": float(s.body.nanmean()), "off": float(s.off.nanmean())})
    return rows


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` (in eval mode, without gradients) on ``x`` with labels ``y``."""
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def fcu_down_ratios(model: torch.nn.Module, x: torch.Tensor) -> dict[int, float]:
    """Per coupled block, the norm of what FCU down adds to the patch tokens over theirs.

    Forward hooks on the published module names (``conv_trans_<k>.squeeze_block`` is FCU down,
    blocks 2 to depth) record, in one forward pass without gradients, the output's patch tokens
    (the class token is copied through) and the tokens they are added to. Hooks are removed
    afterwards, also on error.

    Raises:
        ValueError: ``model`` is not a Conformer (no ``conv_trans_<k>.squeeze_block``).
    """
    depth = getattr(model, "depth", None)
    units = {k: getattr(getattr(model, f"conv_trans_{k}", None), "squeeze_block", None)
             for k in range(2, (depth or 0) + 1)}
    if not units or any(u is None for u in units.values()):
        raise ValueError(f"{type(model).__name__} has no FCU down units "
                         "(conv_trans_<k>.squeeze_block): not a Conformer")
    ratios: dict[int, float] = {}

    def measure(k: int) -> Callable:
        def hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
            tokens = args[1]
            ratios[k] = float(output[:, 1:].norm() / tokens[:, 1:].norm())
        return hook

    handles = [unit.register_forward_hook(measure(k)) for k, unit in units.items()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return ratios
