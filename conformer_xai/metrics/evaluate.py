"""The evaluation runner behind ``conformer-xai evaluate``: every metric over generated scenes.

Only the standard library loads at import time; torch, the models, the explainer and the scene
generator load when :func:`evaluate` runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..names import FAITHFULNESS
from .scoring import (
    SCORES,
    ScoreBook,
    batches,
    randomisation_note,
    score_batch,
    wants_faithfulness,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

#: Which maps get the (expensive) deletion and insertion curves.
FAITHFULNESS_CHOICES = FAITHFULNESS

#: Row fields, in table order.
ROW_FIELDS = (
    "method", "head", "branch", "block", "pointing_game", "energy_pointing_game",
    "part_share", "body_share", "off_share", "deletion_auc", "insertion_auc",
    "randomisation_spearman", "randomisation_ssim", "n", "n_scored", "n_constant", "chance",
    "ci95", "faithfulness_head",
)

_METRICS = SCORES


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
    tap: str = "residual",
    reduce: str | int | None = None,
    headless_head: str = "own",
    cascade_n: int | None = 16,
    bootstrap: int = 1000,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Score the explainer's maps on ``n`` generated scenes whose object and part masks are known.

    Each scene of :class:`conformer_xai.synthetic.SyntheticScenes` (split "test") is explained for
    its true class, and every map is scored with:

    * the pointing game (Zhang et al. 2016) and the energy-based pointing game (Wang et al. 2020)
      against the object mask;
    * part / body / off shares of the map's energy (on the part-and-body classes only);
    * deletion and insertion AUC (Petsiuk et al. 2018), on the last block of each branch and on
      rollout and gradient rollout by default (``faithfulness``); the probability comes from the
      map's own head; maps without one (features, attention, rollout) are scored under their own
      branch's head (``headless_head="own"``: the CNN head for CNN maps, the transformer head
      for transformer maps and rollout), or under the head ``headless_head`` names;
    * randomisation similarity (Adebayo et al. 2018): Spearman correlation and SSIM between the
      map and the same map from a copy of the model with every layer re-initialised (the end of
      the cascade), and the cascade itself (heads first, then the blocks from the last to the
      first, then the stem) on the first ``cascade_n`` scenes.

    Every score comes with ``n_scored`` (the images it averages), ``n_constant`` (maps that
    were constant, e.g. all zero, or NaN: the pointing game counts them as misses, the
    randomisation Spearman, undefined for them, leaves them out), ``chance`` (pointing game and
    energy pointing game: the object's area share; part/body/off: their area shares;
    deletion/insertion: the AUC of a uniformly random map under the same head; randomisation
    Spearman: 0) and ``ci95`` (a percentile bootstrap interval of the mean over images).

    Args:
        model_name: A registered model name (loaded with :func:`conformer_xai.load_model`), or a
            model instance predicting the synthetic classes (moved to ``device``, set to eval
            mode; its weights are not changed: randomisation works on a copy).
        weights: Weights source for a model name: "embedded", "random", "imagenet" or None.
        n: Number of scenes.
        methods: Methods to run (default: the explainer's defaults that apply to the model).
        blocks: 1-based blocks of the per-block methods (default: all).
        heads: Classifier heads of the gradient methods (default: every head of the model).
        seed: Seed of the scenes, of the re-initialisation, the random maps and the bootstrap.
        batch_size: Images per explanation pass, and perturbed images per forward pass.
        device: Torch device.
        steps: Steps of the deletion and insertion curves.
        faithfulness: "last" (last block of each branch, and rollout), "all" maps, or "none".
        randomisation: Compute the randomisation similarity and the cascade.
        size: Scene side in pixels (a multiple of 32).
        progress: Show a progress bar on stderr.
        tap: Transformer gradient tap (:meth:`Explainer.explain`).
        reduce: Channel reduction of the feature maps (None: the explainer's default).
        headless_head: "own" or a head name: the head that scores head-less maps' deletion
            and insertion.
        cascade_n: Scenes of the cascading randomisation (None or 0: no cascade).
        bootstrap: Bootstrap resamples of the 95 % intervals.
        method_options: Per-method options of the explainer (e.g.
            ``{"integrated_gradients": {"steps": 16}}``, :meth:`Explainer.explain`), recorded in
            ``meta["method_options"]``.

    Returns:
        ``{"rows": [...], "cascade": {...} or None, "meta": {...}}``, JSON-serialisable. Each row
        has the fields of :data:`ROW_FIELDS`: means over the images (the shares over
        part-and-body images only), ``None`` where a value was not computed or is undefined;
        ``n`` (scenes explained), and ``n_scored``, ``n_constant``, ``chance`` and ``ci95``
        keyed by score name. The cascade has ``layers`` (the groups in randomisation order),
        ``n``, and per map key and per method a Spearman and an SSIM curve (one value per
        layer group, each a mean over the cascade's scenes).

    Raises:
        ValueError: Bad arguments, or a model whose classes are not the synthetic scenes'.
    """
    import warnings

    import torch

    from ..explain import Explainer
    from ..explain.caveats import SignedTapWarning
    from ..explain.methods.features import DEFAULT_REDUCE
    from ..explain.result import is_constant
    from ..synthetic import CLASS_NAMES, NUM_CLASSES, SyntheticScenes
    from .faithfulness import deletion_auc, insertion_auc
    from .localisation import energy_pointing_game
    from .parts import part_body_off_shares
    from .sanity import randomised_copy

    _check_args(n, batch_size, steps, faithfulness, seed)
    cascade_n = min(int(cascade_n or 0), n) if randomisation else 0
    device = torch.device(device)
    model, model_label = load_scored_model(
        model_name, weights, device, NUM_CLASSES,
        f"evaluate needs a model of the {NUM_CLASSES} synthetic scene classes (e.g. the micro "
        "models with weights 'embedded' or 'random')")
    scenes = SyntheticScenes(n, seed=seed, size=size, split="test")
    random_model = randomised_copy(model, seed=seed) if randomisation else None
    explain_kwargs: dict[str, Any] = {"methods": methods, "blocks": blocks, "tap": tap,
                                      "reduce": DEFAULT_REDUCE if reduce is None else reduce}
    if method_options:
        explain_kwargs["method_options"] = method_options
    book = ScoreBook()
    noise = torch.Generator().manual_seed(seed)
    started = time.perf_counter()

    with Explainer(model, class_names=list(CLASS_NAMES)) as explainer, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", SignedTapWarning)
        head_names = tuple(heads) if heads is not None else explainer.heads
        if headless_head != "own" and headless_head not in explainer.heads:
            raise ValueError(f"headless_head must be 'own' or one of "
                             f"{', '.join(explainer.heads)}, got {headless_head!r}")
        explain_kwargs["head"] = head_names
        score_head = faithfulness_heads(explainer, faithfulness, headless_head)

        for x, labels, obj, part in _progress(batches(scenes, n, batch_size, device), n,
                                              batch_size, progress, f"evaluate {model_label}"):
            has_part = part.flatten(1).any(dim=1)
            book.n_part += int(has_part.sum())
            exp = explainer.explain(x, target=labels, **explain_kwargs)
            _check_classes(exp.logits, NUM_CLASSES)
            book.count(exp.logits, labels)
            random_maps = _random_maps(random_model, x, labels, explain_kwargs)
            ones = torch.ones(obj.shape, device=device)
            area = energy_pointing_game(ones, obj, normalise=False)
            area_shares = (part_body_off_shares(ones[has_part], obj[has_part], part[has_part],
                                                normalise=False)
                           if bool(has_part.any()) else None)

            def curves(head: str, maps: torch.Tensor, x: torch.Tensor = x,
                       labels: torch.Tensor = labels) -> tuple[torch.Tensor, torch.Tensor]:
                score_fn = explainer.head_fn(head)
                return (deletion_auc(score_fn, x, maps, labels, steps=steps,
                                     batch_size=batch_size),
                        insertion_auc(score_fn, x, maps, labels, steps=steps,
                                      batch_size=batch_size))

            score_batch(book, exp.maps, random_maps, obj, part, area, area_shares,
                        lambda maps: (maps, is_constant(maps)), score_head, curves, noise,
                        device)
        cascade = (_cascade(explainer, model, scenes, cascade_n, explain_kwargs, seed, device)
                   if cascade_n else None)
    rows = book.rows(n, seed, bootstrap, score_head)
    meta = {
        "model": model_label,
        "weights": getattr(model, "weights_source", weights if isinstance(model_name, str)
                           else None),
        "n": n, "n_part": book.n_part, "seed": seed, "size": size, "split": "test",
        "target": "true class", "heads": list(head_names),
        "methods": None if methods is None else list(methods),
        "blocks": None if blocks is None else [int(b) for b in blocks],
        "tap": tap, "reduce": explain_kwargs["reduce"],
        "accuracy": {head: c / n for head, c in book.correct.items()},
        "steps": steps, "faithfulness": faithfulness,
        "faithfulness_head_for_headless_maps": ("own branch's head" if headless_head == "own"
                                                else headless_head),
        "randomisation": randomisation_note(randomisation, seed),
        "chance": "pointing game, energy pointing game: the object's area share; part/body/"
                  "off: their area shares; deletion/insertion: a uniformly random map's AUC "
                  "under the same head; randomisation Spearman: 0",
        "ci95": f"percentile bootstrap of the mean over images, {bootstrap} resamples",
        "device": str(device),
        "seconds": round(time.perf_counter() - started, 1),
        "method_options": dict(method_options or {}),
    }
    return {"rows": rows, "cascade": cascade, "meta": meta}


def _cascade(explainer: Any, model: nn.Module, scenes: Any, count: int,
             explain_kwargs: dict[str, Any], seed: int, device: torch.device) -> dict[str, Any]:
    """Cascading randomisation (Adebayo et al. 2018) of every map on the first ``count`` scenes:
    similarity to the trained model's map after each cumulative re-initialisation step."""
    import copy

    import torch

    from ..explain import Explainer
    from ..explain.result import parse_key
    from .agreement import spearman, ssim
    from .sanity import _seeded, cascade_layers, randomise_

    items = [scenes[i] for i in range(count)]
    x = torch.stack([it["image"] for it in items]).to(device)
    labels = torch.tensor([it["label"] for it in items], device=device)
    original = explainer.explain(x, target=labels, **explain_kwargs).maps
    layers = cascade_layers(model)
    curves: dict[str, dict[str, list[float | None]]] = {
        key: {"spearman": [], "ssim": []} for key in original}
    clone = copy.deepcopy(model)
    with _seeded(clone, seed):
        for _, names in layers:
            randomise_(clone, names)
            with Explainer(clone) as rex:
                maps = rex.explain(x, target=labels, **explain_kwargs).maps
            for key, m in original.items():
                curves[key]["spearman"].append(_nanmean(spearman(m, maps[key])))
                curves[key]["ssim"].append(_nanmean(ssim(m, maps[key])))
    by_method: dict[str, dict[str, list[float | None]]] = {}
    for method in dict.fromkeys(parse_key(k)["method"] for k in original):
        keys = [k for k in original if parse_key(k)["method"] == method]
        by_method[method] = {
            score: [_mean_of([curves[k][score][i] for k in keys]) for i in range(len(layers))]
            for score in ("spearman", "ssim")}
    return {"layers": [label for label, _ in layers], "n": count, "order":
            "heads first, then the blocks from the last to the first, then the stem "
            "(cumulative)", "maps": curves, "methods": by_method}


def _nanmean(t: torch.Tensor) -> float | None:
    v = t.float().reshape(-1)
    v = v[~v.isnan()]
    return round(float(v.mean()), 6) if v.numel() else None


def _mean_of(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return round(sum(kept) / len(kept), 6) if kept else None


def format_table(result: dict[str, Any]) -> str:
    """The result of :func:`evaluate` as a plain-text table for the terminal.

    Columns: method, head, branch, block, PG (pointing game), EPG (energy pointing game), part /
    body / off shares, Del (deletion AUC, lower is better), Ins (insertion AUC, higher is better),
    Rand rho and Rand SSIM (similarity to the randomised model's map, lower is better), then the
    row's n, the chance level of PG and EPG (the object's area share), the random-map deletion
    and insertion AUC, and the number of constant maps (the largest over the scores). The
    bootstrap intervals are in the JSON (``--json``).
    """
    meta = result.get("meta", {})
    header = ("method", "head", "branch", "blk", "PG", "EPG", "part", "body", "off", "Del",
              "Ins", "Rand rho", "Rand SSIM", "n", "PG/EPG chance", "Del rand", "Ins rand",
              "const")
    keys = ("method", "head", "branch", "block") + _METRICS
    lines = []
    for row in result.get("rows", []):
        chance = row.get("chance") or {}
        const = row.get("n_constant") or {}
        lines.append([_cell(row.get(k)) for k in keys] + [
            _cell(row.get("n")), _cell(chance.get("pointing_game")),
            _cell(chance.get("deletion_auc")), _cell(chance.get("insertion_auc")),
            _cell(max(const.values()) if const else None)])
    title = None
    if meta:
        acc = ", ".join(f"{h} {v:.1%}" for h, v in meta.get("accuracy", {}).items())
        title = (f"{meta.get('model')} (weights: {meta.get('weights')}), "
                 f"{meta.get('n')} scenes (seed {meta.get('seed')}, "
                 f"{meta.get('n_part')} with a part), accuracy: {acc}; tap "
                 f"{meta.get('tap')}, reduce {meta.get('reduce')}")
    return render_table(header, lines, title,
                        "PG/EPG: pointing game / energy on the object (chance: the object's area "
                        "share); part/body/off: energy shares on part-and-body scenes; Del (lower "
                        "better) / Ins (higher better): RISE AUC (rand: a random map's); Rand: "
                        "similarity to a randomised model's map (lower better); const: constant "
                        "maps; -: not computed or undefined; 95 % intervals and the cascade: "
                        "--json")


def render_table(header: Sequence[str], lines: Sequence[Sequence[str]], title: str | None,
                 legend: str) -> str:
    """A plain-text table: optional title, header, rule, rows (columns 4+ right-aligned), legend."""
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(header)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i >= 3 else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [title] if title else []
    out.append(fmt(header))
    out.append("  ".join("-" * w for w in widths))
    out.extend(fmt(line) for line in lines)
    out.append(legend)
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


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def load_scored_model(model_name: Any, weights: str | None, device: torch.device,
                      num_classes: int, needs: str) -> tuple[nn.Module, str]:
    """The model to score (loaded by name, or moved to ``device``) and its label; ValueError
    ending in ``needs`` when its class count is not ``num_classes``."""
    model = _load(model_name, weights, device)
    classes = getattr(model, "num_classes", num_classes)
    if isinstance(classes, int) and classes != num_classes:
        raise ValueError(f"the model predicts {classes} classes; {needs}")
    label = getattr(model, "model_name", None) or (
        model_name if isinstance(model_name, str) else type(model).__name__)
    return model, label


def faithfulness_heads(explainer: Any, mode: str, headless_head: str = "own"
                       ) -> Callable[[dict[str, Any]], str | None]:
    """``parse_key(key) -> head`` under which a map's deletion and insertion curves are
    computed, None for maps without curves (see :func:`wants_faithfulness`). Maps without a
    head of their own take ``headless_head``, or with "own" their branch's head."""
    last_block = {b: explainer.num_blocks(b) for b in explainer.branches}

    def head_of(info: dict[str, Any]) -> str | None:
        if not wants_faithfulness(mode, info, last_block):
            return None
        if info["head"] is not None:
            return info["head"]
        if headless_head != "own":
            return headless_head
        return info["branch"] if info["branch"] in explainer.heads else explainer.default_head

    return head_of


def _random_maps(random_model: nn.Module | None, x: torch.Tensor, labels: torch.Tensor,
                 explain_kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The randomised model's maps of a batch (empty without a randomised model)."""
    if random_model is None:
        return {}
    from ..explain import Explainer

    with Explainer(random_model) as rex:
        return rex.explain(x, target=labels, **explain_kwargs).maps


def _progress(items: Iterable[Any], n: int, batch_size: int, show: bool, desc: str
              ) -> Iterable[Any]:
    """``items`` (one per batch), behind a progress bar on stderr when ``show``."""
    if not show:
        return items
    from tqdm import tqdm

    return tqdm(items, total=-(-n // batch_size), desc=desc, unit="batch", disable=None)
