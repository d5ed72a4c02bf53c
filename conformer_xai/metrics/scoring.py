"""The one scoring loop of ``evaluate`` (image scenes) and ``evaluate --audio`` (sound scenes).

Both explain a batch of generated inputs for their true class and score every map against the
known masks; they differ only in the plane a map is scored on (the image, or the unfolded
(mel band, frame) plane) and in how an input is deleted (the mean colour, or the silence floor),
which they pass in. :class:`ScoreBook` collects the per-input scores and turns them into rows
with means, chance levels and bootstrap intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: The scores of a row, in table order.
SCORES = ("pointing_game", "energy_pointing_game", "part_share", "body_share", "off_share",
          "deletion_auc", "insertion_auc", "randomisation_spearman", "randomisation_ssim")
#: Scores whose constant (NaN) maps are left out of the mean rather than scored.
DROP_CONSTANT = ("randomisation_spearman",)
#: ``maps -> (maps as scored, (B,) bool constant)``: the plane a map is scored on.
Plane = Callable[["torch.Tensor"], tuple["torch.Tensor", "torch.Tensor"]]
#: ``(head, maps) -> (deletion AUC, insertion AUC)`` per input, under ``head``.
Curves = Callable[[str, "torch.Tensor"], tuple["torch.Tensor", "torch.Tensor"]]


class ScoreBook:
    """Per map key and score: every input's value, constant flag and chance level; plus the
    correct predictions per head and the number of inputs with a part."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, list[torch.Tensor]]] = {}
        self.flags: dict[str, dict[str, list[torch.Tensor]]] = {}
        self.chance: dict[str, dict[str, list[torch.Tensor]]] = {}
        self.correct: dict[str, int] = {}
        self.n_part = 0

    def track(self, key: str) -> None:
        """Give ``key`` a row (in the order keys are first seen)."""
        for book in (self.values, self.flags, self.chance):
            book.setdefault(key, {name: [] for name in SCORES})

    def add(self, key: str, name: str, value: torch.Tensor, constant: torch.Tensor,
            level: torch.Tensor | None = None) -> None:
        """Record one score of a batch: values, constant flags, chance levels (or None)."""
        self.values[key][name].append(value.float().cpu().reshape(-1))
        self.flags[key][name].append(constant.cpu().reshape(-1))
        if level is not None:
            self.chance[key][name].append(level.float().cpu().reshape(-1))

    def count(self, logits: Mapping[str, torch.Tensor], labels: torch.Tensor) -> None:
        """Add a batch's correct top-1 predictions per head."""
        for head, v in logits.items():
            self.correct[head] = self.correct.get(head, 0) + int((v.argmax(1).cpu()
                                                                  == labels.cpu()).sum())

    def rows(self, n: int, seed: int, bootstrap: int,
             faithfulness_head: Callable[[dict[str, Any]], str | None]) -> list[dict[str, Any]]:
        """One row per map key: its scores' means and, per score, ``n_scored``,
        ``n_constant``, ``chance`` and ``ci95``; ``faithfulness_head(info)`` names the head of
        the deletion and insertion curves (None when not computed)."""
        import numpy as np

        from ..explain.result import parse_key

        rng = np.random.default_rng(seed)
        rows = []
        for key, acc in self.values.items():
            info = parse_key(key)
            row: dict[str, Any] = {"method": info["method"], "head": info["head"],
                                   "branch": info["branch"], "block": info["block"]}
            stats = {name: _stats(acc[name], self.flags[key][name], self.chance[key][name],
                                  name in DROP_CONSTANT, rng, bootstrap) for name in SCORES}
            row.update({name: stats[name]["mean"] for name in SCORES})
            row["n"] = n
            row["n_scored"] = {name: stats[name]["n"] for name in SCORES}
            row["n_constant"] = {name: stats[name]["n_constant"] for name in SCORES}
            row["chance"] = {name: stats[name]["chance"] for name in SCORES}
            row["ci95"] = {name: stats[name]["ci95"] for name in SCORES}
            row["faithfulness_head"] = faithfulness_head(info)
            rows.append(row)
        return rows


def batches(data: Any, n: int, batch_size: int, device: torch.device
            ) -> Iterator[tuple[torch.Tensor, ...]]:
    """``(x, labels, object masks, part masks)`` of the first ``n`` items, batch by batch."""
    import torch

    for lo in range(0, n, batch_size):
        items = [data[i] for i in range(lo, min(lo + batch_size, n))]
        yield tuple(torch.stack([torch.as_tensor(it[k]) for it in items]).to(device)
                    for k in ("image", "label", "object_mask", "part_mask"))


def score_batch(book: ScoreBook, maps: Mapping[str, torch.Tensor],
                random_maps: Mapping[str, torch.Tensor], obj: torch.Tensor, part: torch.Tensor,
                area: torch.Tensor, area_shares: tuple[torch.Tensor, ...] | None, plane: Plane,
                faithfulness_head: Callable[[dict[str, Any]], str | None], curves: Curves,
                noise: torch.Generator, device: torch.device) -> None:
    """Score every map of one batch into ``book``.

    Args:
        book: Where the scores go.
        maps: ``key -> (B, H, W)`` maps of the trained model.
        random_maps: The same keys' maps of the randomised model (empty: not scored).
        obj, part: (B, h, w) masks on the plane the maps are scored on.
        area: (B,) chance level of the pointing games (the object's area share).
        area_shares: Chance levels of the part / body / off shares on the inputs with a part
            (None when no input of the batch has one).
        plane: ``maps -> (maps as scored, constant flags)``.
        faithfulness_head: ``parse_key(key) -> head`` of the deletion and insertion curves,
            or None to skip them.
        curves: ``(head, maps) -> (deletion AUC, insertion AUC)``.
        noise: Generator of the random maps behind the curves' chance levels (one per head
            and batch).
        device: Where the random maps go.
    """
    import torch

    from ..explain.result import parse_key
    from .agreement import spearman, ssim
    from .localisation import energy_pointing_game, pointing_game
    from .parts import part_body_off_shares

    has_part = part.flatten(1).any(dim=1)
    random_auc: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key, m in maps.items():
        book.track(key)
        scored, constant = plane(m)
        book.add(key, "pointing_game", pointing_game(scored, obj), constant, area)
        book.add(key, "energy_pointing_game", energy_pointing_game(scored, obj), constant, area)
        if area_shares is not None:
            shares = part_body_off_shares(scored[has_part], obj[has_part], part[has_part])
            for name, value, level in zip(("part_share", "body_share", "off_share"), shares,
                                          area_shares):
                book.add(key, name, value, constant[has_part], level)
        head = faithfulness_head(parse_key(key))
        if head is not None:
            if head not in random_auc:
                random_auc[head] = curves(head, torch.rand(m.shape, generator=noise).to(device))
            dele, ins = curves(head, m)
            book.add(key, "deletion_auc", dele, constant, random_auc[head][0])
            book.add(key, "insertion_auc", ins, constant, random_auc[head][1])
        if key in random_maps:
            other, other_constant = plane(random_maps[key])
            both = constant | other_constant
            rho = spearman(scored, other)
            book.add(key, "randomisation_spearman", rho, both | torch.isnan(rho).cpu(),
                     torch.zeros_like(rho))
            book.add(key, "randomisation_ssim", ssim(scored, other), both)


def wants_faithfulness(mode: str, info: dict[str, Any], last_block: dict[str, int]) -> bool:
    """Whether a map gets deletion and insertion curves under ``mode`` ("last", "all",
    "none"): "last" scores each branch's last block and the maps without a block."""
    if mode == "none":
        return False
    if mode == "all" or info["block"] is None:
        return True
    return info["block"] == last_block.get(info["branch"])


def randomisation_note(randomisation: bool, seed: int) -> str | None:
    """The ``meta["randomisation"]`` line of a result."""
    if not randomisation:
        return None
    return (f"all layers re-initialised (seed {seed}), Spearman and SSIM to the trained "
            "model's map")


def _stats(values: list[torch.Tensor], constant: list[torch.Tensor],
           chance: list[torch.Tensor], drop_constant: bool, rng: Any,
           bootstrap: int) -> dict[str, Any]:
    import numpy as np
    import torch

    out: dict[str, Any] = {"mean": None, "n": 0, "n_constant": 0, "chance": None, "ci95": None}
    if not values:
        return out
    v = torch.cat(values).double().numpy()
    c = torch.cat(constant).numpy().astype(bool)
    keep = ~np.isnan(v)
    if drop_constant:
        keep &= ~c
    out["n_constant"] = int((c | np.isnan(v)).sum())
    out["n"] = int(keep.sum())
    if chance:
        ch = torch.cat(chance).double().numpy()
        ch = ch[~np.isnan(ch)]
        out["chance"] = round(float(ch.mean()), 6) if ch.size else None
    v = v[keep]
    if v.size == 0:
        return out
    mean = float(v.mean())
    out["mean"] = mean if math.isfinite(mean) else None
    if v.size >= 2 and bootstrap > 0:
        idx = rng.integers(0, v.size, size=(bootstrap, v.size))
        means = v[idx].mean(axis=1)
        out["ci95"] = [round(float(np.percentile(means, 2.5)), 6),
                       round(float(np.percentile(means, 97.5)), 6)]
    return out
