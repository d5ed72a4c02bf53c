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
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .evaluate import ROW_FIELDS, _cell, render_table
from .scoring import SCORES, ScoreBook, batches, randomisation_note, score_batch  # noqa: F401

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

#: The per-score statistics every row carries (the image rows' names).
STAT_FIELDS = ("n_scored", "n_constant", "chance", "ci95", "faithfulness_head")
#: Row fields, in table order: the image rows' fields (:data:`ROW_FIELDS`), then any statistic
#: field these do not already hold.
AUDIO_ROW_FIELDS = ROW_FIELDS + tuple(f for f in STAT_FIELDS if f not in ROW_FIELDS)
#: The model ``evaluate --audio`` scores by default (with its embedded weights).
DEFAULT_AUDIO_MODEL = "conformer_micro_audio"


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
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
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
        method_options: Per-method options of the explainer (e.g.
            ``{"integrated_gradients": {"steps": 16}}``, :meth:`Explainer.explain`), recorded in
            ``meta["method_options"]``.

    Returns:
        ``{"rows": [...], "meta": {...}}``, JSON-serialisable; each row has the fields of
        :data:`AUDIO_ROW_FIELDS`.

    Raises:
        ValueError: Bad arguments, or a model whose classes are not the sound scenes'.
    """
    import torch

    from ..audio import DEFAULT_AUDIO_CONFIG, floor_db, resolve_audio_config, unfold
    from ..explain import Explainer
    from ..synthetic.sound_dataset import SoundScenes
    from ..synthetic.sounds import FRAMES, N_MELS, SOUND_CLASS_NAMES, SOUND_NUM_CLASSES
    from .evaluate import (
        _check_args,
        _progress,
        _random_maps,
        faithfulness_heads,
        load_scored_model,
    )
    from .faithfulness import deletion_auc
    from .sanity import randomised_copy

    _check_args(n, batch_size, steps, faithfulness, seed)
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise ValueError(f"bootstrap must be a non-negative int, got {bootstrap!r}")
    device = torch.device(device)
    model, model_label = load_scored_model(
        model_name, weights, device, SOUND_NUM_CLASSES,
        f"evaluate --audio needs a model of the {SOUND_NUM_CLASSES} sound scene classes (e.g. "
        f"{DEFAULT_AUDIO_MODEL} with weights 'embedded' or 'random')")
    floor = floor_db(resolve_audio_config(None))
    clips = SoundScenes(n, seed=seed, split="test")
    random_model = randomised_copy(model, seed=seed) if randomisation else None

    explain_kwargs: dict[str, Any] = {"methods": methods, "blocks": blocks}
    if method_options:
        explain_kwargs["method_options"] = method_options
    book = ScoreBook()
    noise = torch.Generator().manual_seed(seed)
    started = time.perf_counter()

    def plane(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps unfolded to the (mel band, frame) plane (NaN as 0) and their constant flags."""
        tf = unfold(maps.float(), n_mels=N_MELS, freq_ratio=2, frames=FRAMES)
        return torch.nan_to_num(tf, nan=0.0), _is_constant(tf)

    with Explainer(model, class_names=list(SOUND_CLASS_NAMES)) as explainer:
        head_names = tuple(heads) if heads is not None else explainer.heads
        explain_kwargs["head"] = head_names
        score_head = faithfulness_heads(explainer, faithfulness)

        for x, labels, obj, part in _progress(batches(clips, n, batch_size, device), n,
                                              batch_size, progress,
                                              f"evaluate --audio {model_label}"):
            has_part = part.flatten(1).any(dim=1)
            book.n_part += int(has_part.sum())
            floor_x = torch.full_like(x, floor)
            exp = explainer.explain(x, target=labels, **explain_kwargs)
            for head, logits in exp.logits.items():
                if logits.shape[1] != SOUND_NUM_CLASSES:
                    raise ValueError(f"the model's {head} head predicts {logits.shape[1]} "
                                     f"classes; evaluate --audio needs the "
                                     f"{SOUND_NUM_CLASSES} sound scene classes")
            book.count(exp.logits, labels)
            random_maps = _random_maps(random_model, x, labels, explain_kwargs)
            area = obj.flatten(1).float().mean(dim=1)
            area_shares = None
            if bool(has_part.any()):
                p, o = part[has_part].flatten(1).float(), obj[has_part].flatten(1).float()
                area_shares = (p.mean(1), (o * (1 - p)).mean(1), (1 - torch.maximum(o, p)).mean(1))

            def curves(head: str, maps: torch.Tensor, x: torch.Tensor = x,
                       floor_x: torch.Tensor = floor_x, labels: torch.Tensor = labels
                       ) -> tuple[torch.Tensor, torch.Tensor]:
                folded = torch.nan_to_num(maps.float(), nan=float("-inf"))
                return _del_ins(explainer.head_fn(head), x, floor_x, folded, labels, steps,
                                batch_size, deletion_auc)

            score_batch(book, exp.maps, random_maps, obj, part, area, area_shares, plane,
                        score_head, curves, noise, device)

    rows = book.rows(n, seed, bootstrap, score_head)
    meta = {
        "model": model_label,
        "weights": getattr(model, "weights_source", weights if isinstance(model_name, str)
                           else None),
        "input": "audio", "n": n, "n_part": book.n_part, "seed": seed, "split": "test",
        "target": "true class",
        "grid": {"bands": N_MELS, "frames": FRAMES, "freq_ratio": 2},
        "front_end": {k: DEFAULT_AUDIO_CONFIG[k] for k in ("sr", "n_fft", "hop_length",
                                                           "n_mels", "fmin", "fmax")},
        "fill_db": floor, "heads": list(head_names),
        "methods": None if methods is None else list(methods),
        "blocks": None if blocks is None else [int(b) for b in blocks],
        "accuracy": {head: c / n for head, c in book.correct.items()},
        "steps": steps, "faithfulness": faithfulness,
        "faithfulness_head_for_headless_maps": "own branch's head",
        "randomisation": randomisation_note(randomisation, seed),
        "chance": "pointing game, energy pointing game: the mask's area share of the (band, "
                  "frame) plane; part/body/off: their area shares; deletion/insertion: a "
                  "uniformly random map's AUC under the same head; randomisation Spearman: 0",
        "ci95": f"percentile bootstrap of the mean over clips, {bootstrap} resamples",
        "device": str(device),
        "seconds": round(time.perf_counter() - started, 1),
        "method_options": dict(method_options or {}),
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


