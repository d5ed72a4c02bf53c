"""Measure the choices behind the feature maps and the gradient taps on the ground-truth scenes.

``python -m benchmarks.map_choices [--n 100] [--out map_choices.json]`` explains ``n`` held-out
synthetic scenes (``conformer_xai.synthetic``, split "test", the true class) with the three
embedded models and reports, per model, branch and block:

* for every channel reduction of the feature maps (``mean``, ``abs_mean``, ``l2``, ``max``,
  ``pca``): pointing game and energy pointing game against the object mask, and the Spearman
  correlation of each reduction's map with the channel-mean map;
* for the transformer gradient taps (``residual`` and ``attention_input``, Grad-CAM under the
  default head): pointing game and energy pointing game, and the Spearman correlation between
  the two taps' maps.

The README's choice of the default reduction is the reduction with the highest energy pointing
game averaged over every block of every branch of the three models (ties: pointing game). The
numbers it quotes come from this script.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

MODELS = ("conformer_micro_patch16", "deit_micro_patch16", "resnet_micro")


def measure(n: int = 100, seed: int = 0, batch_size: int = 25,
            models: tuple[str, ...] = MODELS) -> dict[str, Any]:
    """Every score described in the module docstring, as a JSON-ready dict."""
    import warnings

    import torch

    from conformer_xai import Explainer, load_model
    from conformer_xai.explain.caveats import SignedTapWarning
    from conformer_xai.explain.methods.features import REDUCTIONS
    from conformer_xai.metrics import energy_pointing_game, pointing_game, spearman
    from conformer_xai.synthetic import SyntheticScenes

    warnings.simplefilter("ignore", SignedTapWarning)
    torch.manual_seed(seed)
    scenes = SyntheticScenes(n, seed=seed, split="test")
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for name in models:
        model = load_model(name, weights="embedded")
        acc: dict[tuple, list[torch.Tensor]] = {}
        with Explainer(model) as explainer:
            for lo in range(0, n, batch_size):
                items = [scenes[i] for i in range(lo, min(lo + batch_size, n))]
                x = torch.stack([it["image"] for it in items])
                labels = torch.tensor([it["label"] for it in items])
                obj = torch.stack([it["object_mask"] for it in items])
                by_reduce = {r: explainer.explain(x, target=labels, methods=("features",),
                                                  reduce=r).maps for r in REDUCTIONS}
                for r, maps in by_reduce.items():
                    for key, m in maps.items():
                        parts = key.split("/")
                        base = ("features", r, parts[1], int(parts[2]))
                        acc.setdefault(base + ("pg",), []).append(pointing_game(m, obj))
                        acc.setdefault(base + ("epg",), []).append(energy_pointing_game(m, obj))
                        acc.setdefault(base + ("rho_mean",), []).append(
                            spearman(m, by_reduce["mean"][key]))
                if "transformer" in explainer.branches:
                    by_tap = {t: explainer.explain(x, target=labels, methods=("gradcam",), tap=t)
                              for t in ("residual", "attention_input")}
                    for key in by_tap["residual"].maps:
                        parts = key.split("/")
                        if parts[2] != "transformer":
                            continue
                        for t, exp in by_tap.items():
                            m = exp.maps[key]
                            base = ("gradcam", t, "transformer", int(parts[3]))
                            acc.setdefault(base + ("pg",), []).append(pointing_game(m, obj))
                            acc.setdefault(base + ("epg",), []).append(
                                energy_pointing_game(m, obj))
                            acc.setdefault(base + ("rho_mean",), []).append(spearman(
                                m, by_tap["residual" if t == "attention_input"
                                          else "attention_input"].maps[key]))
        cells: dict[tuple, dict[str, float]] = {}
        for (method, choice, branch, block, score), chunks in acc.items():
            v = torch.cat([c.float().reshape(-1) for c in chunks])
            v = v[~torch.isnan(v)]
            cells.setdefault((method, choice, branch, block), {})[score] = (
                round(float(v.mean()), 4) if v.numel() else None)
        for (method, choice, branch, block), scores in sorted(cells.items()):
            rows.append({"model": name, "method": method, "choice": choice, "branch": branch,
                         "block": block, **scores})
    summary: dict[str, dict[str, float]] = {}
    for r in REDUCTIONS:
        sel = [row for row in rows if row["method"] == "features" and row["choice"] == r]
        summary[r] = {s: round(sum(row[s] for row in sel) / len(sel), 4) for s in ("pg", "epg")}
    best = max(summary, key=lambda r: (summary[r]["epg"], summary[r]["pg"]))
    return {"rows": rows, "reductions": summary, "best_reduction": best,
            "meta": {"n": n, "seed": seed, "models": list(models), "split": "test",
                     "target": "true class", "seconds": round(time.perf_counter() - started, 1),
                     "scores": "pg: pointing game; epg: energy pointing game; rho_mean: "
                               "Spearman with the mean map (features) or with the other tap "
                               "(gradcam)"}}


def markdown(result: dict[str, Any]) -> str:
    """The per-block table and the summary, as Markdown."""
    lines = ["| model | map | choice | branch | block | PG | EPG | Spearman |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    for row in result["rows"]:
        lines.append(f"| {row['model']} | {row['method']} | {row['choice']} | {row['branch']} | "
                     f"{row['block']} | {row['pg']:.2f} | {row['epg']:.2f} | "
                     f"{row['rho_mean']:.2f} |")
    lines.append("")
    lines.append("| reduction | mean PG | mean EPG |")
    lines.append("|---|---:|---:|")
    for r, s in result["reductions"].items():
        lines.append(f"| {r} | {s['pg']:.3f} | {s['epg']:.3f} |")
    lines.append(f"\nbest (highest mean EPG): {result['best_reduction']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="scenes (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    result = measure(args.n, args.seed, args.batch_size, tuple(args.models.split(",")))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1))
    sys.stdout.write(markdown(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
