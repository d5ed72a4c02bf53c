"""The evaluation runner on generated scenes: row schema, value ranges, JSON, the table."""

import json
import math

import pytest
import torch

from conformer_xai.metrics import evaluate, format_table
from conformer_xai.metrics.evaluate import _METRICS, ROW_FIELDS
from conformer_xai.models.conformer import Conformer
from conformer_xai.synthetic import NUM_CLASSES

UNIT = ("pointing_game", "energy_pointing_game", "part_share", "body_share", "off_share",
        "deletion_auc", "insertion_auc")


@pytest.fixture(scope="module")
def micro_result() -> dict:
    return evaluate("conformer_micro_patch16", weights="random", n=4, methods=["gradcam", "rollout"],
                    blocks=[11, 12], heads=["cnn", "transformer"], steps=2, batch_size=4, size=64)


def check_ranges(row: dict) -> None:
    for name in UNIT:
        assert row[name] is None or 0.0 <= row[name] <= 1.0, (name, row)
    for name in ("randomisation_spearman", "randomisation_ssim"):
        assert row[name] is None or -1.0 <= row[name] <= 1.0, (name, row)


def test_rows_cover_every_map_with_the_schema(micro_result):
    rows = micro_result["rows"]
    assert all(tuple(row) == ROW_FIELDS for row in rows)
    keys = {(r["method"], r["head"], r["branch"], r["block"]) for r in rows}
    assert keys == {("gradcam", h, b, k) for h in ("cnn", "transformer")
                    for b in ("cnn", "transformer") for k in (11, 12)} | {
        ("rollout", None, "transformer", None)}
    for row in rows:
        check_ranges(row)
        assert row["n"] == 4
        assert row["pointing_game"] is not None and row["energy_pointing_game"] is not None
        assert row["randomisation_ssim"] is not None
        # deletion and insertion by default on the last block and on rollout only
        last = row["block"] in (12, None)
        assert (row["deletion_auc"] is not None) == last
        assert (row["insertion_auc"] is not None) == last
        # n=4 draws labels 0..3: no part-and-body scene
        assert row["part_share"] is None
        for name, interval in row["ci95"].items():
            if row[name] is None:
                assert interval is None
            elif interval is not None:
                assert interval[0] - 1e-9 <= row[name] <= interval[1] + 1e-9
    json.loads(json.dumps(micro_result))


def test_meta_and_table(micro_result):
    meta = micro_result["meta"]
    assert meta["model"] == "conformer_micro_patch16" and meta["weights"] == "random"
    assert meta["n"] == 4 and meta["n_part"] == 0 and meta["heads"] == ["cnn", "transformer"]
    assert set(meta["accuracy"]) == {"fused", "cnn", "transformer"}
    table = format_table(micro_result).splitlines()
    assert table[0].startswith("conformer_micro_patch16 (weights: random), 4 scenes")
    assert table[1].split()[:6] == ["method", "head", "branch", "blk", "PG", "EPG"]
    body = [line.split() for line in table[3:-1]]
    assert len(body) == len(micro_result["rows"])
    first = micro_result["rows"][0]
    assert body[0][:4] == [first["method"], first["head"], first["branch"], str(first["block"])]
    assert body[0][4] == f"{first['pointing_game']:.3f}"


def test_part_shares_on_part_scenes_with_a_model_instance():
    torch.manual_seed(0)
    model = Conformer(patch_size=16, num_classes=NUM_CLASSES, base_channel=16, channel_ratio=1,
                      embed_dim=48, depth=3, num_heads=3)
    result = evaluate(model, n=10, methods=["gradcam"], blocks=[3], heads=["fused"],
                      faithfulness="none", randomisation=False, batch_size=10, size=64)
    assert result["meta"]["n_part"] == 2          # labels 8 and 9 are the bird classes
    assert len(result["rows"]) == 2
    shared = 0
    for row in result["rows"]:
        check_ranges(row)
        assert row["deletion_auc"] is None and row["randomisation_spearman"] is None
        if row["part_share"] is None:  # every part scene's map constant: said, not hidden
            assert row["n_constant"]["part_share"] == 2 and row["n_scored"]["part_share"] == 0
            continue
        total = row["part_share"] + row["body_share"] + row["off_share"]
        assert math.isclose(total, 1.0, abs_tol=1e-5)
        chance = row["chance"]
        assert math.isclose(chance["part_share"] + chance["body_share"] + chance["off_share"],
                            1.0, abs_tol=1e-5)
        shared += 1
    assert shared >= 1


def test_bad_arguments_are_value_errors():
    wrong = Conformer(patch_size=16, num_classes=3, base_channel=16, channel_ratio=1,
                      embed_dim=48, depth=3, num_heads=3)
    with pytest.raises(ValueError, match="predicts 3 classes"):
        evaluate(wrong, n=2, size=64)
    with pytest.raises(ValueError, match="faithfulness must be one of"):
        evaluate(wrong, n=2, faithfulness="some")
    with pytest.raises(ValueError, match="n must be a positive int"):
        evaluate(wrong, n=0)


def test_new_methods_are_scored_with_the_rest():
    result = evaluate("conformer_micro_patch16", weights="embedded", n=2,
                      methods=["lrp", "transcam", "integrated_gradients", "smoothgrad"],
                      blocks=[12], heads=["fused"], steps=2, batch_size=2, size=64)
    rows = {(r["method"], r["head"], r["branch"], r["block"]): r for r in result["rows"]}
    for key in [("lrp", "fused", None, None), ("transcam", None, "cnn", None),
                ("integrated_gradients", "fused", None, None), ("smoothgrad", "fused", None, None),
                ("lrp", "fused", "cnn", 12), ("lrp", "fused", "transformer", 12)]:
        row = rows[key]
        check_ranges(row)
        assert row["pointing_game"] is not None and row["randomisation_spearman"] is not None
    for key in [("lrp", "fused", None, None), ("transcam", None, "cnn", None),
                ("integrated_gradients", "fused", None, None)]:
        assert rows[key]["deletion_auc"] is not None and rows[key]["insertion_auc"] is not None


def test_every_score_reports_n_constant_maps_chance_and_interval(micro_result):
    from conformer_xai.synthetic import SyntheticScenes

    scenes = SyntheticScenes(4, seed=0, size=64, split="test")
    area = sum(float(scenes[i]["object_mask"].float().mean()) for i in range(4)) / 4
    for row in micro_result["rows"]:
        assert isinstance(row["n"], int)
        for name in ("n_scored", "n_constant", "chance", "ci95"):
            assert set(row[name]) == set(_METRICS), name
        assert row["chance"]["pointing_game"] == pytest.approx(area, abs=1e-5)
        assert row["chance"]["energy_pointing_game"] == pytest.approx(area, abs=1e-5)
        assert row["chance"]["randomisation_spearman"] == 0.0
        for name in _METRICS:
            ci = row["ci95"][name]
            if row[name] is None or row["n_scored"][name] < 2:
                continue
            assert ci[0] <= row[name] + 1e-9 and row[name] <= ci[1] + 1e-9, (name, row)
            assert 0 <= row["n_constant"][name] <= row["n"]
        if row["deletion_auc"] is not None:
            assert 0.0 <= row["chance"]["deletion_auc"] <= 1.0
            assert 0.0 <= row["chance"]["insertion_auc"] <= 1.0
    # the transformer head has no gradient path to CNN block 12: every map is constant (zero),
    # a miss for the pointing game, left out of the randomisation similarity
    [dead] = [r for r in micro_result["rows"] if (r["method"], r["head"], r["branch"],
                                                  r["block"]) == ("gradcam", "transformer",
                                                                  "cnn", 12)]
    assert dead["n_constant"]["pointing_game"] == 4 and dead["pointing_game"] == 0.0
    assert dead["n_scored"]["randomisation_spearman"] == 0
    assert dead["randomisation_spearman"] is None


def test_headless_maps_are_scored_under_their_own_branch_head(micro_result):
    [rollout] = [r for r in micro_result["rows"] if r["method"] == "rollout"]
    assert rollout["faithfulness_head"] == "transformer"
    assert micro_result["meta"]["faithfulness_head_for_headless_maps"] == "own branch's head"
    gradcam = [r for r in micro_result["rows"] if r["method"] == "gradcam" and r["block"] == 12]
    assert all(r["faithfulness_head"] == r["head"] for r in gradcam)


def test_cascade_runs_from_the_heads_down_to_the_stem(micro_result):
    from conformer_xai.plot import cascade_figure

    cascade = micro_result["cascade"]
    assert cascade["layers"] == ["head"] + [f"block_{k}" for k in range(12, 0, -1)] + ["stem"]
    assert cascade["n"] == 4
    for key, curves in cascade["maps"].items():
        assert len(curves["spearman"]) == len(curves["ssim"]) == 14, key
    assert set(cascade["methods"]) == {"gradcam", "rollout"}
    fig = cascade_figure(micro_result)
    assert len(fig.axes[0].lines) == 2 + 1  # two methods and the zero line
    with pytest.raises(ValueError, match="no cascade"):
        cascade_figure({"rows": [], "cascade": None})


def test_readme_tables_are_generated_from_the_json(micro_result, tmp_path, capsys):
    from benchmarks.evaluate_tables import main

    path = tmp_path / "r.json"
    path.write_text(json.dumps({"command": "evaluate", **micro_result}))
    assert main([str(path), "--blocks", "12"]) == 0
    lines = capsys.readouterr().out.splitlines()
    body = lines[2:]
    assert len(body) == len([r for r in micro_result["rows"] if r["block"] in (12, None)])
    row = next(r for r in micro_result["rows"] if r["method"] == "rollout")
    [line] = [ln for ln in body if "| rollout |" in ln]
    assert f"{row['pointing_game']:.2f} [" in line and f"({row['chance']['deletion_auc']:.3f})" in line
    assert main([str(path), "--cascade"]) == 0
    cascade = capsys.readouterr().out
    assert "block_12" in cascade and "| gradcam |" in cascade
