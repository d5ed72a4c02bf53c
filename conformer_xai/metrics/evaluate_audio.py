"""``conformer-xai evaluate --audio``: every metric over generated sound scenes.

The twin of :mod:`conformer_xai.metrics.evaluate` for spectrogram models: each clip of
:class:`conformer_xai.synthetic.SoundScenes` (split "test") is explained for its true class on the
folded ``(1, 224, 224)`` log-mel input, every map is unfolded to the (mel band, frame) plane
(112 x 448) with :func:`conformer_xai.audio.unfold`, and scored against the clip's
time-frequency masks. Rows carry the fields of the image rows (:data:`AUDIO_ROW_FIELDS`).

Only the standard library loads at import time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .evaluate import ROW_FIELDS, _cell, _stats, render_table

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

#: The per-score statistics every row carries (the image rows' names).
STAT_FIELDS = ("n_scored", "n_constant", "chance", "ci95", "faithfulness_head")
#: Row fields, in table order: the image rows' fields (:data:`ROW_FIELDS`), then any statistic
#: field these do not already hold.
AUDIO_ROW_FIELDS = ROW_FIELDS + tuple(f for f in STAT_FIELDS if f not in ROW_FIELDS)
#: The scores of a row.
SCORES = ("pointing_game", "energy_pointing_game", "part_share", "body_share", "off_share",
          "deletion_auc", "insertion_auc", "randomisation_spearman", "randomisation_ssim")
#: The model ``evaluate --audio`` scores by default (with its embedded weights).
DEFAULT_AUDIO_MODEL = "conformer_micro_audio"
#: Scores whose constant maps are left out of the mean rather than scored.
_DROP_CONSTANT = ("randomisation_spearman",)


def evaluate_audio(
    model_name: str | nn.Module = DEFAULT_AUDIO_MODEL,
    weights: str | None = "embedded",
    n: int = 70,
    methods: Sequence[str] | None = None,
    blocks: Sequence[int] | None = None,
    heads: Sequence[str] | None = None,
    seed: int = 0,
    batch_size: int = 14,
    device: str | torch.device = "cpu",
    steps: int = 50,
    faithfulness: str = "last",
    randomisation: bool = True,
    bootstrap: int = 1000,
    progress: bool = False,
) -> dict[str, Any]:
    """Score the explainer's maps on ``n`` generated sound scenes with known time-frequency masks.

    Every map is unfolded to the (mel band, frame) plane and scored with:

    * the pointing game and the energy pointing game against the deciding event's mask;
    * part / body / off shares of the map's energy on the part-and-body classes (the marker, the
      rest of the buzz, everything else);
    * deletion and insertion AUC on the spectrogram: deletion replaces the most relevant cells
      by the front end's floor (-100 dB, the value of silence; 0 dB would be a loud sound),
      insertion starts from an all-floor spectrogram and restores the most relevant cells first
      (the fold is a one-to-one map of cells, so removing folded pixels removes the same
      (band, frame) cells); maps without a head of their own are scored under their own
      branch's head, as for the image rows;
    * randomisation similarity: Spearman correlation and SSIM between the map and the same map
      of a copy of the model with every layer re-initialised.

    Every score comes with ``n_scored``, ``n_constant`` (constant or NaN maps: the pointing game
    counts them as misses, the randomisation Spearman leaves them out), ``chance`` (pointing
    game and energy: the mask's area share; part/body/off: their area shares; deletion and
    insertion: a uniformly random map's AUC under the same head; randomisation Spearman: 0) and
    ``ci95`` (a percentile bootstrap interval of the mean over clips).

    Args:
        model_name: A registered model name (loaded with :func:`conformer_xai.load_model`), or
            a model instance over the sound classes taking ``(B, 1, 224, 224)`` dB inputs.
        weights: Weights source for a model name ("embedded", "random") or None.
        n: Number of clips.
        methods: Methods to run (default: the explainer's defaults that apply).
        blocks: 1-based blocks of the per-block methods (default: all).
        heads: Classifier heads of the gradient methods (default: every head of the model).
        seed: Seed of the clips, the re-initialisation, the random maps and the bootstrap.
        batch_size: Clips per explanation pass, and perturbed inputs per forward pass.
        device: Torch device.
        steps: Steps of the deletion and insertion curves.
        faithfulness: "last" (last block of each branch, and head-less maps), "all", "none".
        randomisation: Compute the randomisation similarity.
        bootstrap: Bootstrap resamples of the 95 % intervals.
        progress: Show a progress bar on stderr.

    Returns:
        ``{"rows": [...], "meta": {...}}``, JSON-serialisable; each row has the fields of
        :data:`AUDIO_ROW_FIELDS`.

    Raises:
        ValueError: Bad arguments, or a model whose classes are not the sound scenes'.
    """
    import numpy as np
    import torch

    from ..audio import DEFAULT_AUDIO_CONFIG, floor_db, resolve_audio_config, unfold
    from ..explain import Explainer
    from ..explain.result import parse_key
    from ..synthetic.sound_dataset import SoundScenes
    from ..synthetic.sounds import FRAMES, N_MELS, SOUND_CLASS_NAMES, SOUND_NUM_CLASSES
    from .agreement import spearman, ssim
    from .evaluate import _check_args, _load, _wants_faithfulness
    from .faithfulness import deletion_auc
    from .localisation import energy_pointing_game, pointing_game
    from .parts import part_body_off_shares
    from .sanity import randomised_copy

    _check_args(n, batch_size, steps, faithfulness, seed)
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise ValueError(f"bootstrap must be a non-negative int, got {bootstrap!r}")
    device = torch.device(device)
    model = _load(model_name, weights, device)
    classes = getattr(model, "num_classes", SOUND_NUM_CLASSES)
    if isinstance(classes, int) and classes != SOUND_NUM_CLASSES:
        raise ValueError(f"the model predicts {classes} classes; evaluate --audio needs a model "
                         f"of the {SOUND_NUM_CLASSES} sound scene classes (e.g. "
                         f"{DEFAULT_AUDIO_MODEL} with weights 'embedded' or 'random')")
    model_label = getattr(model, "model_name", None) or (
        model_name if isinstance(model_name, str) else type(model).__name__)
    floor = floor_db(resolve_audio_config(None))
    clips = SoundScenes(n, seed=seed, split="test")
    random_model = randomised_copy(model, seed=seed) if randomisation else None

    explain_kwargs: dict[str, Any] = {"methods": methods, "blocks": blocks}
    values: dict[str, dict[str, list[torch.Tensor]]] = {}
    flags: dict[str, dict[str, list[torch.Tensor]]] = {}
    chance: dict[str, dict[str, list[torch.Tensor]]] = {}
    correct: dict[str, int] = {}
    n_part = 0
    noise = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    batches = range(0, n, batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc=f"evaluate --audio {model_label}", unit="batch",
                       disable=None)

    def flat(maps: torch.Tensor) -> torch.Tensor:
        return unfold(maps.float(), n_mels=N_MELS, freq_ratio=2, frames=FRAMES)

    with Explainer(model, class_names=list(SOUND_CLASS_NAMES)) as explainer:
        head_names = tuple(heads) if heads is not None else explainer.heads
        explain_kwargs["head"] = head_names
        last_block = {b: explainer.num_blocks(b) for b in explainer.branches}

        def score_head(info: dict[str, Any]) -> str:
            if info["head"] is not None:
                return info["head"]
            return info["branch"] if info["branch"] in explainer.heads else \
                explainer.default_head

        for lo in batches:
            items = [clips[i] for i in range(lo, min(lo + batch_size, n))]
            x = torch.stack([it["image"] for it in items]).to(device)
            labels = torch.tensor([it["label"] for it in items], device=device)
            obj = torch.stack([it["object_mask"] for it in items]).to(device)
            part = torch.stack([it["part_mask"] for it in items]).to(device)
            has_part = part.flatten(1).any(dim=1)
            n_part += int(has_part.sum())
            floor_x = torch.full_like(x, floor)
            exp = explainer.explain(x, target=labels, **explain_kwargs)
            for head, logits in exp.logits.items():
                if logits.shape[1] != SOUND_NUM_CLASSES:
                    raise ValueError(f"the model's {head} head predicts {logits.shape[1]} "
                                     f"classes; evaluate --audio needs the "
                                     f"{SOUND_NUM_CLASSES} sound scene classes")
                correct[head] = correct.get(head, 0) + int((logits.argmax(1).cpu()
                                                            == labels.cpu()).sum())
            random_maps = {}
            if random_model is not None:
                with Explainer(random_model) as rex:
                    random_maps = rex.explain(x, target=labels, **explain_kwargs).maps
            area = obj.flatten(1).float().mean(dim=1)
            area_shares = None
            if bool(has_part.any()):
                p, o = part[has_part].flatten(1).float(), obj[has_part].flatten(1).float()
                area_shares = (p.mean(1), (o * (1 - p)).mean(1), (1 - torch.maximum(o, p)).mean(1))
            random_auc: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
            for key, maps in exp.maps.items():
                info = parse_key(key)
                tf = flat(maps)
                acc = values.setdefault(key, {name: [] for name in SCORES})
                fl = flags.setdefault(key, {name: [] for name in SCORES})
                base = chance.setdefault(key, {name: [] for name in SCORES})
                constant = _is_constant(tf)

                def add(name: str, value: torch.Tensor, const: torch.Tensor,
                        level: torch.Tensor | None, acc: dict = acc, fl: dict = fl,
                        base: dict = base) -> None:
                    acc[name].append(value.float().cpu().reshape(-1))
                    fl[name].append(const.cpu().reshape(-1))
                    if level is not None:
                        base[name].append(level.float().cpu().reshape(-1))

                clean = torch.nan_to_num(tf, nan=0.0)
                add("pointing_game", pointing_game(clean, obj), constant, area)
                add("energy_pointing_game", energy_pointing_game(clean, obj), constant, area)
                if area_shares is not None:
                    shares = part_body_off_shares(clean[has_part], obj[has_part], part[has_part])
                    for name, value, level in zip(("part_share", "body_share", "off_share"),
                                                  shares, area_shares):
                        add(name, value, constant[has_part], level)
                if _wants_faithfulness(faithfulness, info, last_block):
                    head = score_head(info)
                    score_fn = explainer.head_fn(head)
                    folded = torch.nan_to_num(maps.float(), nan=float("-inf"))
                    if head not in random_auc:
                        noise_maps = torch.rand(maps.shape, generator=noise).to(device)
                        random_auc[head] = _del_ins(score_fn, x, floor_x, noise_maps, labels,
                                                    steps, batch_size, deletion_auc)
                    dele, ins = _del_ins(score_fn, x, floor_x, folded, labels, steps,
                                         batch_size, deletion_auc)
                    add("deletion_auc", dele, constant, random_auc[head][0])
                    add("insertion_auc", ins, constant, random_auc[head][1])
                if key in random_maps:
                    other = flat(random_maps[key])
                    both = constant | _is_constant(other)
                    rho = spearman(clean, torch.nan_to_num(other, nan=0.0))
                    add("randomisation_spearman", rho, both | torch.isnan(rho).cpu(),
                        torch.zeros_like(rho))
                    add("randomisation_ssim", ssim(clean, torch.nan_to_num(other, nan=0.0)),
                        both, None)

    rng = np.random.default_rng(seed)
    rows = []
    for key, acc in values.items():
        info = parse_key(key)
        stats = {name: _stats(acc[name], flags[key][name], chance[key][name],
                              name in _DROP_CONSTANT, rng, bootstrap) for name in SCORES}
        row: dict[str, Any] = {"method": info["method"], "head": info["head"],
                               "branch": info["branch"], "block": info["block"]}
        row.update({name: stats[name]["mean"] for name in SCORES})
        row["n"] = n
        row["n_scored"] = {name: stats[name]["n"] for name in SCORES}
        row["n_constant"] = {name: stats[name]["n_constant"] for name in SCORES}
        row["chance"] = {name: stats[name]["chance"] for name in SCORES}
        row["ci95"] = {name: stats[name]["ci95"] for name in SCORES}
        row["faithfulness_head"] = (score_head(info) if _wants_faithfulness(
            faithfulness, info, last_block) else None)
        rows.append({field: row[field] for field in AUDIO_ROW_FIELDS})
    meta = {
        "model": model_label,
        "weights": getattr(model, "weights_source", weights if isinstance(model_name, str)
                           else None),
        "input": "audio",
        "n": n,
        "n_part": n_part,
        "seed": seed,
        "split": "test",
        "target": "true class",
        "grid": {"bands": N_MELS, "frames": FRAMES, "freq_ratio": 2},
        "front_end": {k: DEFAULT_AUDIO_CONFIG[k] for k in ("sr", "n_fft", "hop_length",
                                                           "n_mels", "fmin", "fmax")},
        "fill_db": floor,
        "heads": list(head_names),
        "methods": None if methods is None else list(methods),
        "blocks": None if blocks is None else [int(b) for b in blocks],
        "accuracy": {head: c / n for head, c in correct.items()},
        "steps": steps,
        "faithfulness": faithfulness,
        "faithfulness_head_for_headless_maps": "own branch's head",
        "randomisation": ("all layers re-initialised (seed "
                          f"{seed}), Spearman and SSIM to the trained model's map")
        if randomisation else None,
        "chance": "pointing game, energy pointing game: the mask's area share of the (band, "
                  "frame) plane; part/body/off: their area shares; deletion/insertion: a "
                  "uniformly random map's AUC under the same head; randomisation Spearman: 0",
        "ci95": f"percentile bootstrap of the mean over clips, {bootstrap} resamples",
        "device": str(device),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return {"rows": rows, "meta": meta}


def format_audio_table(result: dict[str, Any]) -> str:
    """The result of :func:`evaluate_audio` as a plain-text table for the terminal."""
    meta = result.get("meta", {})
    header = ("method", "head", "branch", "blk", "PG", "PG chance", "EPG", "part", "body", "off",
              "Del", "Del rand", "Ins", "Ins rand", "Rand rho", "Rand SSIM")
    lines = []
    for row in result.get("rows", []):
        ch = row.get("chance") or {}
        cells = [row.get("method"), row.get("head"), row.get("branch"), row.get("block"),
                 row.get("pointing_game"), ch.get("pointing_game"),
                 row.get("energy_pointing_game"), row.get("part_share"), row.get("body_share"),
                 row.get("off_share"), row.get("deletion_auc"), ch.get("deletion_auc"),
                 row.get("insertion_auc"), ch.get("insertion_auc"),
                 row.get("randomisation_spearman"), row.get("randomisation_ssim")]
        lines.append([_cell(c) for c in cells])
    title = None
    if meta:
        acc = ", ".join(f"{h} {v:.1%}" for h, v in meta.get("accuracy", {}).items())
        title = (f"{meta.get('model')} (weights: {meta.get('weights')}), {meta.get('n')} sound "
                 f"scenes (seed {meta.get('seed')}, {meta.get('n_part')} with a marker), "
                 f"accuracy: {acc}")
    return render_table(header, lines, title,
                        "Maps unfolded to (mel band, frame). PG/EPG: pointing game / energy on "
                        "the deciding event (chance: its area share); part/body/off: energy "
                        "shares on the marker, the rest of the buzz, elsewhere; Del (lower better)"
                        " / Ins (higher better): AUC with cells set to the -100 dB floor, 'rand' "
                        "a random map's; Rand: similarity to a randomised model's map (lower "
                        "better); -: not computed")


# ---------------------------------------------------------------------- helpers
def _del_ins(score_fn: Any, x: torch.Tensor, floor_x: torch.Tensor, maps: torch.Tensor,
             labels: torch.Tensor, steps: int, batch_size: int,
             deletion_auc: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Deletion (cells -> floor) and insertion (floor -> cells) AUC, most relevant first."""
    from .faithfulness import _curves, auc

    dele = deletion_auc(score_fn, x, maps, labels, steps=steps, batch_size=batch_size,
                        baseline=floor_x)
    ins = auc(_curves(score_fn, start=floor_x, finish=x, maps=maps, targets=labels,
                      steps=steps, batch_size=batch_size))
    return dele, ins


def _is_constant(maps: torch.Tensor) -> torch.Tensor:
    """Per map: constant (all values equal) or holding NaN."""
    f = maps.flatten(1)
    return ((f.amax(1) == f.amin(1)) | f.isnan().any(1)).cpu()


