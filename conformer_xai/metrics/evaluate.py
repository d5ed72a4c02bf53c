"""The evaluation runner behind ``conformer-xai evaluate``: every metric over generated scenes.

Only the standard library loads at import time; torch, the models, the explainer and the scene
generator load when :func:`evaluate` runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

#: Which maps get the (expensive) deletion and insertion curves.
FAITHFULNESS_CHOICES = ("last", "all", "none")

#: Row fields, in table order.
ROW_FIELDS = (
    "method", "head", "branch", "block", "pointing_game", "energy_pointing_game",
    "part_share", "body_share", "off_share", "deletion_auc", "insertion_auc",
    "randomisation_spearman", "randomisation_ssim", "n", "ci95",
)

_METRICS = ROW_FIELDS[4:13]


def evaluate(
    model_name: str | nn.Module,
    weights: str | None = "embedded",
    n: int = 200,
    methods: Sequence[str] | None = None,
    blocks: Sequence[int] | None = None,
    heads: Sequence[str] | None = None,
    seed: int = 0,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    steps: int = 50,
    faithfulness: str = "last",
    randomisation: bool = True,
    size: int = 128,
    progress: bool = False,
) -> dict[str, Any]:
    """Score the explainer's maps on ``n`` generated scenes whose object and part masks are known.

    Each scene of :class:`conformer_xai.synthetic.SyntheticScenes` (split "test") is explained for
    its true class, and every map is scored with:

    * the pointing game (Zhang et al. 2016) and the energy-based pointing game (Wang et al. 2020)
      against the object mask;
    * part / body / off shares of the map's energy (on the part-and-body classes only);
    * deletion and insertion AUC (Petsiuk et al. 2018), on the last block of each branch and on
      rollout and gradient rollout by default (``faithfulness``); the probability comes from the
      map's own head, or from the model's default head (fused for Conformer) for maps without one
      (features, attention, rollout);
    * randomisation similarity (Adebayo et al. 2018): Spearman correlation and SSIM between the
      map and the same map from a copy of the model with every layer re-initialised (the end of
      the cascade of :func:`conformer_xai.metrics.randomisation_test`).

    Args:
        model_name: A registered model name (loaded with :func:`conformer_xai.load_model`), or a
            model instance predicting the synthetic classes (moved to ``device``, set to eval
            mode; its weights are not changed: randomisation works on a copy).
        weights: Weights source for a model name: "embedded", "random", "imagenet" or None.
        n: Number of scenes.
        methods: Methods to run (default: the explainer's defaults that apply to the model).
        blocks: 1-based blocks of the per-block methods (default: all).
        heads: Classifier heads of the gradient methods (default: every head of the model).
        seed: Seed of the scenes and of the re-initialisation.
        batch_size: Images per explanation pass, and perturbed images per forward pass.
        device: Torch device.
        steps: Steps of the deletion and insertion curves.
        faithfulness: "last" (last block of each branch, and rollout), "all" maps, or "none".
        randomisation: Compute the randomisation similarity (one more explanation pass).
        size: Scene side in pixels (a multiple of 32).
        progress: Show a progress bar on stderr.

    Returns:
        ``{"rows": [...], "meta": {...}}``, JSON-serialisable. Each row has the fields of
        :data:`ROW_FIELDS`: means over the images (the shares over part-and-body images only);
        ``None`` where a value was not computed or is undefined; and ``ci95``: per metric, a 95 %
        bootstrap interval of that mean over the images (percentile, 1000 resamples), or None.

    Raises:
        ValueError: Bad arguments, or a model whose classes are not the synthetic scenes'.
    """
    import torch

    from ..explain import Explainer
    from ..explain.result import parse_key
    from ..synthetic import CLASS_NAMES, NUM_CLASSES, SyntheticScenes
    from .agreement import spearman, ssim
    from .faithfulness import deletion_auc, insertion_auc
    from .localisation import energy_pointing_game, pointing_game
    from .parts import part_body_off_shares
    from .sanity import randomised_copy

    _check_args(n, batch_size, steps, faithfulness, seed)
    device = torch.device(device)
    model = _load(model_name, weights, device)
    classes = getattr(model, "num_classes", NUM_CLASSES)
    if isinstance(classes, int) and classes != NUM_CLASSES:
        raise ValueError(f"the model predicts {classes} classes; evaluate needs a model of the "
                         f"{NUM_CLASSES} synthetic scene classes (e.g. the micro models with "
                         f"weights 'embedded' or 'random')")
    model_label = getattr(model, "model_name", None) or (
        model_name if isinstance(model_name, str) else type(model).__name__)
    scenes = SyntheticScenes(n, seed=seed, size=size, split="test")
    random_model = randomised_copy(model, seed=seed) if randomisation else None

    explain_kwargs: dict[str, Any] = {"methods": methods, "blocks": blocks}
    values: dict[str, dict[str, list[torch.Tensor]]] = {}
    correct: dict[str, int] = {}
    n_part = 0
    started = time.perf_counter()
    batches = range(0, n, batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc=f"evaluate {model_label}", unit="batch", disable=None)
    with Explainer(model, class_names=list(CLASS_NAMES)) as explainer:
        head_names = tuple(heads) if heads is not None else explainer.heads
        explain_kwargs["head"] = head_names
        default_head = explainer.default_head
        last_block = {b: explainer.num_blocks(b) for b in explainer.branches}
        for lo in batches:
            items = [scenes[i] for i in range(lo, min(lo + batch_size, n))]
            x = torch.stack([it["image"] for it in items]).to(device)
            labels = torch.tensor([it["label"] for it in items], device=device)
            obj = torch.stack([it["object_mask"] for it in items]).to(device)
            part = torch.stack([it["part_mask"] for it in items]).to(device)
            has_part = part.flatten(1).any(dim=1)
            n_part += int(has_part.sum())
            exp = explainer.explain(x, target=labels, **explain_kwargs)
            _check_classes(exp.logits, NUM_CLASSES)
            for head, logits in exp.logits.items():
                correct[head] = correct.get(head, 0) + int((logits.argmax(1).cpu()
                                                            == labels.cpu()).sum())
            random_maps = {}
            if random_model is not None:
                with Explainer(random_model) as rex:
                    random_maps = rex.explain(x, target=labels, **explain_kwargs).maps
            for key, maps in exp.maps.items():
                info = parse_key(key)
                acc = values.setdefault(key, {name: [] for name in _METRICS})
                acc["pointing_game"].append(pointing_game(maps, obj))
                acc["energy_pointing_game"].append(energy_pointing_game(maps, obj))
                if bool(has_part.any()):
                    shares = part_body_off_shares(maps[has_part], obj[has_part], part[has_part])
                    acc["part_share"].append(shares.part)
                    acc["body_share"].append(shares.body)
                    acc["off_share"].append(shares.off)
                if _wants_faithfulness(faithfulness, info, last_block):
                    score_fn = explainer.head_fn(info["head"] or default_head)
                    acc["deletion_auc"].append(deletion_auc(
                        score_fn, x, maps, labels, steps=steps, batch_size=batch_size))
                    acc["insertion_auc"].append(insertion_auc(
                        score_fn, x, maps, labels, steps=steps, batch_size=batch_size))
                if key in random_maps:
                    acc["randomisation_spearman"].append(spearman(maps, random_maps[key]))
                    acc["randomisation_ssim"].append(ssim(maps, random_maps[key]))

    rows = []
    for key, acc in values.items():
        info = parse_key(key)
        row: dict[str, Any] = {"method": info["method"], "head": info["head"],
                               "branch": info["branch"], "block": info["block"]}
        row.update({name: _mean(acc[name]) for name in _METRICS})
        row["n"] = n
        row["ci95"] = {name: _interval(acc[name], seed) for name in _METRICS}
        rows.append(row)
    meta = {
        "model": model_label,
        "weights": getattr(model, "weights_source", weights if isinstance(model_name, str)
                           else None),
        "n": n,
        "n_part": n_part,
        "seed": seed,
        "size": size,
        "split": "test",
        "target": "true class",
        "heads": list(head_names),
        "methods": None if methods is None else list(methods),
        "blocks": None if blocks is None else [int(b) for b in blocks],
        "accuracy": {head: c / n for head, c in correct.items()},
        "steps": steps,
        "faithfulness": faithfulness,
        "faithfulness_head_for_headless_maps": default_head,
        "randomisation": ("all layers re-initialised (seed "
                          f"{seed}), Spearman and SSIM to the trained model's map")
        if randomisation else None,
        "device": str(device),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return {"rows": rows, "meta": meta}


def format_table(result: dict[str, Any]) -> str:
    """The result of :func:`evaluate` as a plain-text table for the terminal.

    Columns: method, head, branch, block, PG (pointing game), EPG (energy pointing game), part /
    body / off shares, Del (deletion AUC, lower is better), Ins (insertion AUC, higher is better),
    Rand rho and Rand SSIM (similarity to the randomised model's map, lower is better).
    """
    meta = result.get("meta", {})
    header = ("method", "head", "branch", "blk", "PG", "EPG", "part", "body", "off", "Del",
              "Ins", "Rand rho", "Rand SSIM")
    keys = ("method", "head", "branch", "block") + _METRICS
    lines = [[_cell(row.get(k)) for k in keys] for row in result.get("rows", [])]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(header)]
    numeric = set(range(3, len(header)))

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = []
    if meta:
        acc = ", ".join(f"{h} {v:.1%}" for h, v in meta.get("accuracy", {}).items())
        out.append(f"{meta.get('model')} (weights: {meta.get('weights')}), "
                   f"{meta.get('n')} scenes (seed {meta.get('seed')}, "
                   f"{meta.get('n_part')} with a part), accuracy: {acc}")
    out.append(fmt(header))
    out.append("  ".join("-" * w for w in widths))
    out.extend(fmt(line) for line in lines)
    out.append("PG/EPG: pointing game / energy on the object; part/body/off: energy shares on "
               "part-and-body scenes; Del (lower better) / Ins (higher better): RISE AUC; "
               "Rand: similarity to a randomised model's map (lower better); -: not computed "
               "or undefined (e.g. a constant map)")
    return "\n".join(out)


# ---------------------------------------------------------------------- helpers
def _check_args(n: int, batch_size: int, steps: int, faithfulness: str, seed: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if batch_size < 1 or steps < 1:
        raise ValueError(f"batch_size and steps must be >= 1, got {batch_size} and {steps}")
    if faithfulness not in FAITHFULNESS_CHOICES:
        raise ValueError(f"faithfulness must be one of {FAITHFULNESS_CHOICES}, "
                         f"got {faithfulness!r}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")


def _load(model_name: Any, weights: str | None, device: torch.device) -> nn.Module:
    from torch import nn

    if isinstance(model_name, nn.Module):
        return model_name.to(device).eval()
    if not isinstance(model_name, str):
        raise ValueError(f"model_name must be a registered model name or an nn.Module, got "
                         f"{type(model_name).__name__}")
    from ..models.weights import load_model

    return load_model(model_name, weights=weights, device=device)


def _check_classes(logits: dict[str, torch.Tensor], num_classes: int) -> None:
    for head, v in logits.items():
        if v.shape[1] != num_classes:
            raise ValueError(f"the model's {head} head predicts {v.shape[1]} classes; evaluate "
                             f"needs a model of the {num_classes} synthetic scene classes (e.g. "
                             f"weights 'embedded' or 'random' of the micro models)")


def _wants_faithfulness(mode: str, info: dict[str, Any], last_block: dict[str, int]) -> bool:
    if mode == "none":
        return False
    if mode == "all" or info["block"] is None:
        return True
    return info["block"] == last_block.get(info["branch"])


def _mean(chunks: list[torch.Tensor]) -> float | None:
    if not chunks:
        return None
    import torch

    v = torch.cat([c.float().cpu().reshape(-1) for c in chunks])
    v = v[~torch.isnan(v)]
    if v.numel() == 0:
        return None
    m = float(v.mean())
    return m if math.isfinite(m) else None


def _interval(chunks: list[torch.Tensor], seed: int, resamples: int = 1000
              ) -> list[float] | None:
    """95 % percentile-bootstrap interval of the mean of the per-image values."""
    if not chunks:
        return None
    import torch

    v = torch.cat([c.float().cpu().reshape(-1) for c in chunks]).double()
    v = v[torch.isfinite(v)]
    if v.numel() < 2:
        return None
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, v.numel(), (resamples, v.numel()), generator=g)
    means = v[idx].mean(dim=1)
    return [float(means.quantile(0.025)), float(means.quantile(0.975))]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
