"""``benchmarks.evaluate_tables --faithful``: the README's most-faithful table from evaluate's JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.evaluate_tables import faithful_rows, main  # noqa: E402

SCORES = ("pointing_game", "energy_pointing_game", "part_share", "body_share", "off_share",
          "deletion_auc", "insertion_auc", "randomisation_spearman", "randomisation_ssim")


def row(method: str, head: str | None, branch: str | None, block: int | None, deletion: float | None,
        ci: list[float] | None, insertion: float | None) -> dict:
    values = dict.fromkeys(SCORES, 0.5)
    values.update(deletion_auc=deletion, insertion_auc=insertion)
    return {"method": method, "head": head, "branch": branch, "block": block, **values,
            "n": 24, "n_scored": dict.fromkeys(SCORES, 24),
            "n_constant": dict.fromkeys(SCORES, 0),
            "chance": {**dict.fromkeys(SCORES, 0.1), "deletion_auc": 0.3, "insertion_auc": 0.4},
            "ci95": {**dict.fromkeys(SCORES, [0.4, 0.6]), "deletion_auc": ci,
                     "insertion_auc": [insertion - 0.1, insertion + 0.1] if insertion else None},
            "faithfulness_head": head or "fused"}


RESULT = {"meta": {"model": "conformer_micro_patch16", "n": 24}, "rows": [
    row("gradcam", "fused", "cnn", 12, 0.20, [0.15, 0.25], 0.70),
    row("lrp", "fused", None, None, 0.10, [0.05, 0.16], 0.40),
    row("integrated_gradients", "fused", None, None, 0.12, [0.08, 0.18], 0.45),
    row("features", None, "transformer", 6, None, None, None),  # no faithfulness scores
]}


def test_faithful_table_sorts_by_deletion_and_names_the_inseparable(tmp_path, capsys):
    assert [r["method"] for r in faithful_rows(RESULT)] == [
        "lrp", "integrated_gradients", "gradcam"]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(RESULT))
    assert main([str(path), "--faithful"]) == 0
    lines = capsys.readouterr().out.splitlines()
    body = [ln for ln in lines[2:] if ln.startswith("| `")]
    assert len(body) == 3 + 1  # three scored maps, then the summary row
    assert body[0].startswith("| `conformer_micro_patch16` | lrp | fused | input | – | "
                              "0.100 [0.050, 0.160] (0.300) | 0.400 [0.300, 0.500] (0.400) |")
    assert "| gradcam | fused | cnn | 12 |" in body[2]
    summary = body[3]
    # IG's interval (0.08-0.18) overlaps LRP's (0.05-0.16); Grad-CAM's (0.15-0.25) does too
    assert "lrp (input): 0.100 [0.050, 0.160]" in summary
    assert "integrated_gradients (input), gradcam (cnn/12) (2 of 2)" in summary
    assert "gradcam (cnn/12): 0.700 [0.600, 0.800]" in summary
    apart = {**RESULT, "rows": [dict(r) for r in RESULT["rows"]]}
    apart["rows"][0]["ci95"] = {**apart["rows"][0]["ci95"], "deletion_auc": [0.17, 0.25]}
    path.write_text(json.dumps(apart))
    assert main([str(path), "--faithful", "--no-header"]) == 0
    summary = capsys.readouterr().out.splitlines()[-1]
    assert "integrated_gradients (input) (1 of 2)" in summary
