"""``conformer-xai explain`` end to end: the real console script on real image files.

Runs use the small Conformer with random weights, few methods and small inputs to stay fast.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "conformer-xai"
CAT = REPO / "examples" / "photos" / "chelsea.png"
CUP = REPO / "examples" / "photos" / "coffee.png"
RANDOM = ["--model", "conformer_micro_patch16", "--weights", "random"]
FAST = ["--methods", "gradcam,rollout", "--blocks", "12", "--input-size", "64x64"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), "explain", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """The error lines on stderr; every other line must be a note (or a progress bar)."""
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines()
            if line.startswith("conformer-xai: error: ")]


def copy(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(src.read_bytes())
    return dest


def test_folder_run_mirrors_subfolders_writes_figures_summaries_and_arrays(tmp_path: Path):
    from conformer_xai import Explanation

    inp, out = tmp_path / "in", tmp_path / "out"
    copy(CAT, inp / "a" / "x.png")
    copy(CUP, inp / "b" / "x.png")
    copy(CUP, inp / "b" / "deeper" / "y.png")
    (inp / "b" / "readme.txt").write_text("not an image, skipped inside a folder")
    result = run(inp, *RANDOM, *FAST, "--save-arrays", "--json", "--batch-size", "2",
                 "--out", out)
    assert result.returncode == 0, result.stderr

    run_summary = json.loads(result.stdout)  # --json: stdout holds exactly one JSON document
    assert set(run_summary) >= {"command", "model", "weights", "device", "out", "notes",
                                "images", "failed", "timings_s"}
    assert run_summary["weights"] == "random"
    assert any("random weights" in n for n in run_summary["notes"])
    assert run_summary["failed"] == []
    assert "conformer-xai: note:" in result.stderr and "random weights" in result.stderr
    assert "0/3" not in result.stderr  # no progress bar when stderr is not a terminal

    images = {Path(s["input"]).relative_to(inp).as_posix(): s for s in run_summary["images"]}
    assert sorted(images) == ["a/x.png", "b/deeper/y.png", "b/x.png"]
    for rel, summary in images.items():
        stem = out / Path(rel).with_suffix("")
        figure, summary_file = stem.with_suffix(".png"), stem.with_suffix(".json")
        arrays = stem.parent / f"{stem.name}.maps.npz"
        assert summary["files"] == {"figure": str(figure), "summary": str(summary_file),
                                    "arrays": str(arrays)}
        assert figure.read_bytes()[:8] == PNG_MAGIC
        assert json.loads(summary_file.read_text()) == summary
        assert summary["weights"] == "random" and summary["input_kind"] == "photo"
        assert summary["input_size"] == [64, 64]
        assert summary["heads"] == ["fused", "cnn", "transformer"]
        assert set(summary["predictions"]) == {"fused", "cnn", "transformer"}
        for head, top in summary["predictions"].items():
            assert len(top) == 5, head
            probs = [p["prob"] for p in top]
            assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-5
            assert all(set(p) == {"index", "name", "prob"} for p in top)
        assert summary["target"]["index"] == summary["predictions"]["fused"][0]["index"]
        assert summary["target"]["name"] == summary["predictions"]["fused"][0]["name"]
        assert set(summary["timings_s"]) == {"load_s", "explain_s", "figure_s", "write_s"}
        assert sorted(summary["maps"]) == sorted(
            [f"gradcam/{h}/{b}/12" for h in ("fused", "cnn", "transformer")
             for b in ("cnn", "transformer")] + ["rollout/transformer"])
        exp = Explanation.load(arrays)
        assert sorted(exp.maps) == sorted(summary["maps"])
        assert tuple(exp.get("gradcam", "cnn", 12, head="fused").shape) == (1, 64, 64)
        assert exp.meta["weights_source"] == "random"
        assert int(exp.target[0]) == summary["target"]["index"]
        assert tuple(exp.image.shape) == (1, 64, 64, 3)
    assert not (out / "b" / "readme.json").exists()


def test_existing_outputs_need_force(tmp_path: Path):
    inp = tmp_path / "in"
    out = inp / "results"  # inside the input folder: a rerun must not explain its own figures
    copy(CAT, inp / "cat.png")
    args = [inp, *RANDOM, *FAST, "--head", "fused", "--out", out]
    first = run(*args)
    assert first.returncode == 0, first.stderr
    assert "0/1" not in first.stderr  # no progress bar for one image
    assert sorted(p.name for p in out.iterdir()) == ["cat.json", "cat.png"]
    assert "cat.png ->" in first.stdout and "wrote 1 of 1 image(s)" in first.stdout
    figure = (out / "cat.png").read_bytes()
    (out / "cat.json").write_text('{"edited by": "the user"}')

    refused = run(*args)
    assert refused.returncode == 1
    [line] = error_lines(refused)
    assert "exists" in line and "--force" in line
    assert (out / "cat.json").read_text() == '{"edited by": "the user"}'
    assert (out / "cat.png").read_bytes() == figure

    forced = run(*args, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "wrote 1 of 1 image(s)" in forced.stdout
    assert json.loads((out / "cat.json").read_text())["input"] == str(inp / "cat.png")
    assert sorted(p.name for p in out.iterdir()) == ["cat.json", "cat.png"]


def test_bad_files_in_a_folder_are_skipped_listed_and_exit_1(tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    copy(CAT, inp / "good.png")
    (inp / "empty.png").write_bytes(b"")
    (inp / "text.png").write_text("this is a text file with an image's name\n")
    copy(CUP, inp / "sub" / "truncated.png")
    data = (inp / "sub" / "truncated.png").read_bytes()
    (inp / "sub" / "truncated.png").write_bytes(data[: len(data) // 3])
    result = run(inp / "*.png", inp / "sub", *RANDOM, *FAST, "--head", "fused", "--out", out,
                 "--json")  # a glob and a folder
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert [Path(s["input"]).name for s in summary["images"]] == ["good.png"]
    assert sorted(Path(f["input"]).name for f in summary["failed"]) == [
        "empty.png", "text.png", "truncated.png"]
    errors = error_lines(result)
    assert len(errors) == 3, result.stderr
    assert "image/s" not in result.stderr and "%|" not in result.stderr  # no bar off a terminal
    for name in ("empty.png", "text.png", "truncated.png"):
        assert sum(name in line for line in errors) == 1, (name, errors)
    assert "not an image file" in " ".join(errors)
    assert (out / "good.png").read_bytes()[:8] == PNG_MAGIC
    assert json.loads((out / "good.json").read_text())["input"] == str(inp / "good.png")
    assert sorted(p.name for p in out.rglob("*")) == ["good.json", "good.png"]


def test_one_unreadable_file_is_one_error_line_and_debug_shows_the_traceback(tmp_path: Path):
    bad = tmp_path / "photo.png"
    bad.write_text("not a PNG at all")
    result = run(bad, *RANDOM, *FAST, "--out", tmp_path / "out")
    assert result.returncode == 1
    assert error_lines(result) == [f"conformer-xai: error: {bad}: not an image file "
                                   f"(unknown or unsupported image format)"]
    debug = run(bad, *RANDOM, *FAST, "--out", tmp_path / "out", "--debug")
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "not an image file" in debug.stderr


def test_a_warning_is_one_note_line_and_debug_keeps_pythons_format(tmp_path: Path):
    # --new-head warns that the heads start random; --target 5 then stops the run (3 classes).
    args = [CAT, "--model", "conformer_micro_patch16", "--num-classes", "3", "--new-head",
            "--target", "5", "--out", tmp_path / "out"]
    result = run(*args)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith("conformer-xai: note: embedded: skipped the checkpoint's head "
                               "weights"), result.stderr
    assert lines[-1].startswith("conformer-xai: error: --target 5 is out of range")
    assert all(line.startswith("conformer-xai: ") for line in lines), result.stderr
    assert "WeightsWarning" not in result.stderr
    debug = run(*args, "--debug")
    assert debug.returncode == 2 and "WeightsWarning: embedded: skipped" in debug.stderr


def test_tap_and_reduce_are_recorded_and_signed_tap_methods_get_one_note(tmp_path: Path):
    out = tmp_path / "out"
    result = run(CAT, CUP, *RANDOM, "--methods", "features,gradcam,layercam",
                 "--blocks", "12", "--input-size", "64x64", "--tap", "attention_input",
                 "--reduce", "l2", "--save-arrays", "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    run_summary = json.loads(result.stdout)
    for image in run_summary["images"]:
        assert image["tap"] == "attention_input" and image["reduce"] == "l2"
    notes = [n for n in run_summary["notes"] if n.startswith("layercam on transformer taps")]
    assert len(notes) == 1
    assert result.stderr.count("note: layercam on transformer taps") == 1  # once, not per image
    from conformer_xai.explain.result import Explanation

    exp = Explanation.load(out / "chelsea.maps.npz")
    assert exp.meta["tap"] == "attention_input"
    assert exp.meta["geometry"]["gradcam/fused/cnn/12"]["stride"] == [32, 32]

    bad = run(CAT, *RANDOM, *FAST, "--reduce", "median", "--out", tmp_path / "b")
    assert bad.returncode == 2
    assert error_lines(bad) == ["conformer-xai: error: Invalid value for '--reduce': 'median' "
                                "is not a reduction; accepted: mean, abs_mean, l2, max, pca or "
                                "a channel index (an int >= 0)"]
