"""Branch flow of a Conformer: where relevance goes between the CNN and transformer branches.

Probes (identity views whose gradient is the gradient through one use of a tensor) sit on each
block's two outputs, on the FCU-down output ``s`` (tokens added to the transformer input) and on
the FCU-up output ``e`` (map added inside the fusion block). With relevance ``R(t) = sum t * g``,
block ``k`` (read backwards, from the head to the input) has:

* ``cnn_in = R(c_k)``, ``transformer_in = R(t_k)``: relevance entering the block from above on
  each lane (for the transformer lane, only what block ``k + 1`` or the head reads; FCU up of
  block ``k`` is inside the block);
* ``fcu_up = R(e_k)``: relevance that reached the CNN (fusion) block and came from the tokens;
* ``fcu_down = R(s_k)`` over the patch tokens: relevance that reached the transformer block and
  came from the CNN map (the class token FCU down passes on is the transformer's own: it stays);
* ``cnn_stays = R(c_{k-1}) - fcu_down`` and ``transformer_stays = R(t_{k-1}) - fcu_up``: what
  leaves the block on each lane, less what crossed into it in this block;
* ``absorbed = cnn_in + transformer_in - R(c_{k-1}) - R(t_{k-1})``: what biases, the epsilon
  stabiliser and (block 1) the class token absorbed.

So each row adds up exactly: stays + crossings + absorbed = cnn_in + transformer_in. Block 1 has
no FCU: its outgoing lanes are the stem output as read by ``conv_1`` and by ``trans_patch_conv``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["FLOW_FIELDS", "FlowProbes", "branch_share"]

#: Fields of one row of ``Explanation.flows[head]``.
FLOW_FIELDS = ("block", "cnn_in", "transformer_in", "cnn_stays", "transformer_stays", "fcu_down",
               "fcu_up", "absorbed")


def _probe(t: torch.Tensor) -> torch.Tensor:
    return t.view_as(t)


class FlowProbes:
    """Hooks that put probes on a Conformer's block outputs and FCU outputs during one pass."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.tensors: dict[str, torch.Tensor] = {}

    @contextlib.contextmanager
    def installed(self) -> Iterator[FlowProbes]:
        """Install the hooks for the duration of the context (removed in ``finally``)."""
        m = self.model
        store = self.tensors
        handles = []

        def out_hook(name: str):
            def hook(module: nn.Module, args: Any, output: Any) -> Any:
                if isinstance(output, tuple):
                    c, t = _probe(output[0]), _probe(output[1])
                    store[f"c{name}"], store[f"t{name}"] = c, t
                    return (c, t, *output[2:])  # (a conv-trans block may return more)
                p = _probe(output)
                store[name] = p
                return p

            return hook

        def in_hook(name: str):
            def pre_hook(module: nn.Module, args: Any) -> Any:
                p = _probe(args[0])
                store[name] = p
                return (p, *args[1:])

            return pre_hook

        try:
            handles.append(m.conv_1.register_forward_pre_hook(in_hook("stem_cnn")))
            handles.append(m.trans_patch_conv.register_forward_pre_hook(in_hook("stem_trans")))
            handles.append(m.conv_1.register_forward_hook(out_hook("c1")))
            handles.append(m.trans_1.register_forward_hook(out_hook("t1")))
            for k in range(2, m.depth + 1):
                block = getattr(m, f"conv_trans_{k}")
                handles.append(block.register_forward_hook(out_hook(str(k))))
                handles.append(block.squeeze_block.register_forward_hook(out_hook(f"down{k}")))
                handles.append(block.expand_block.register_forward_hook(out_hook(f"up{k}")))
            yield self
        finally:
            for h in handles:
                h.remove()

    def names(self) -> list[str]:
        """Probe names in a fixed order (what ``autograd.grad`` is asked for)."""
        return list(self.tensors)

    def rows(self, grads: dict[str, torch.Tensor | None]) -> list[dict[str, Any]]:
        """The flow table (one row per block, each field a list of per-image floats)."""
        rel = {}
        for name, t in self.tensors.items():
            g = grads.get(name)
            r = torch.zeros_like(t) if g is None else (t.detach() * g).float()
            if name.startswith("down"):  # FCU down's patch tokens (its class token stays)
                rel[name] = r[:, 1:].flatten(1).sum(1)
            else:
                rel[name] = r.flatten(1).sum(1)
        rows = []
        for k in range(1, self.model.depth + 1):
            cnn_in, trans_in = rel[f"c{k}"], rel[f"t{k}"]
            if k == 1:
                out_c, out_t = rel["stem_cnn"], rel["stem_trans"]
                down = up = torch.zeros_like(cnn_in)
            else:
                out_c, out_t = rel[f"c{k - 1}"], rel[f"t{k - 1}"]
                down, up = rel[f"down{k}"], rel[f"up{k}"]
            values = {"cnn_in": cnn_in, "transformer_in": trans_in,
                      "cnn_stays": out_c - down, "transformer_stays": out_t - up,
                      "fcu_down": down, "fcu_up": up,
                      "absorbed": cnn_in + trans_in - out_c - out_t}
            row: dict[str, Any] = {"block": k}
            row.update({f: [float(v) for v in values[f].cpu()] for f in FLOW_FIELDS[1:]})
            rows.append(row)
        return rows


def branch_share(rows: list[dict[str, Any]], index: int = 0) -> dict[str, float]:
    """Shares of the relevance that reaches the stem through each branch's input path.

    Block 1's ``cnn_stays`` is what the CNN branch (``conv_1``) reads of the stem output, and its
    ``transformer_stays`` what the patch embedding reads; the shares are of their sum.
    """
    first = next(r for r in rows if r["block"] == 1)
    c, t = first["cnn_stays"][index], first["transformer_stays"][index]
    total = c + t
    if total == 0:
        return {"cnn": 0.0, "transformer": 0.0}
    return {"cnn": c / total, "transformer": t / total}
