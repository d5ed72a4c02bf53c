"""The seams that replaced second copies: errors naming settings, atomic writes, JSON values,
the random-weights warning in Explanation.meta, interop hooks held by the adapter, the training
recipe and the scoring book."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from conformer_xai.cli.errors import describe, option_spelling
from conformer_xai.errors import Setting, SettingError, SettingExistsError
from conformer_xai.explain import Explainer
from conformer_xai.explain.caveats import RANDOM_WEIGHTS, warning_messages
from conformer_xai.files import UMASK, atomic_write, atomic_write_text, jsonable, write_json


# --------------------------------------------------------------------------- errors
def test_setting_error_reads_as_python_and_as_cli_options() -> None:
    exc = SettingError("pass {new_head} or {weights}; give {ckpt}; {resume} to go on",
                       new_head=Setting("new_head", True), weights=Setting("weights", "embedded"),
                       ckpt=Setting("checkpoint", placeholder="PATH"),
                       resume=Setting("resume", True))
    assert isinstance(exc, ValueError)
    assert str(exc) == ("pass new_head=True or weights='embedded'; give checkpoint=PATH; "
                        "resume=True to go on")
    assert describe(exc) == ("pass --new-head or --weights embedded; give --checkpoint PATH; "
                             "leave out --no-resume to go on")


def test_setting_fields_only_are_replaced_so_paths_keep_their_braces() -> None:
    exc = SettingExistsError("/tmp/{x}/a.npz exists; pass {force}", force=Setting("force", True))
    assert isinstance(exc, FileExistsError)
    assert str(exc) == "/tmp/{x}/a.npz exists; pass force=True"
    assert describe(exc) == "/tmp/{x}/a.npz exists; pass --force"
    assert option_spelling(Setting("as_image", True)) == "--array-as-image"


def test_library_errors_name_their_settings(tmp_path: Path, tiny_conformer) -> None:
    from conformer_xai.explain.result import Explanation

    with Explainer(tiny_conformer) as explainer:
        with pytest.raises(SettingError, match="x height and width must be >= 32") as err:
            explainer.explain(torch.zeros(1, 3, 16, 64), methods=["features"])
        assert describe(err.value).startswith("the input (--input-size) height and width")
        exp = explainer.explain(torch.zeros(1, 3, 64, 64), methods=["features"])
    assert isinstance(exp, Explanation)
    exp.save(tmp_path / "a.npz")
    with pytest.raises(FileExistsError, match="pass overwrite=True") as err:
        exp.save(tmp_path / "a.npz")
    assert "pass --force to replace it" in describe(err.value)


# --------------------------------------------------------------------------- files
def test_atomic_write_replaces_whole_files_with_the_umask_mode(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~UMASK
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_jsonable_and_write_json(tmp_path: Path) -> None:
    value = {1: (np.int64(3), np.float32(0.5)), "t": torch.tensor([1.0, 2.0]),
             "a": np.arange(2), "p": Path("x")}
    assert jsonable(value) == {"1": [3, 0.5], "t": [1.0, 2.0], "a": [0, 1], "p": "x"}
    write_json(tmp_path / "v.json", jsonable(value))
    assert json.loads((tmp_path / "v.json").read_text())["a"] == [0, 1]


# --------------------------------------------------------------------------- warnings
def test_random_weights_are_a_structured_warning_of_every_explanation(tiny_conformer,
                                                                      images) -> None:
    tiny_conformer.weights_source = "random"
    tiny_conformer.model_name = "tiny"
    with Explainer(tiny_conformer) as explainer:
        exp = explainer.explain(images, methods=["features"])
        assert exp.select(1).meta["warnings"] == [
            {"code": RANDOM_WEIGHTS,
             "message": "tiny has random weights: its maps and predictions carry no meaning"}]
        tiny_conformer.weights_source = "embedded"
        assert explainer.explain(images, methods=["features"]).meta["warnings"] == []
    assert warning_messages(exp.meta) == [exp.meta["warnings"][0]["message"]]


# --------------------------------------------------------------------------- interop hooks
def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_interop_hooks_go_on_exit_and_on_close(tiny_conformer, images) -> None:
    explainer = Explainer(tiny_conformer)
    with explainer.nchw_tap("transformer", 3) as module:
        assert _hook_count(tiny_conformer) == 2  # input-size capture and the token reroute
        seen = []
        handle = module.register_forward_hook(lambda m, a, out: seen.append(out.shape))
        explainer.head_fn("cnn")(images)
        handle.remove()
        assert seen and len(seen[0]) == 4
    assert _hook_count(tiny_conformer) == 0 and explainer.adapter.hooks == []
    left_open = explainer.nchw_tap("transformer", 12)
    left_open.__enter__()  # the last block's residual tap is its input: routed through an
    assert len(explainer.adapter.hooks) == 3  # identity module, which holds the reroute hook
    assert _hook_count(tiny_conformer) == 2
    explainer.close()  # an interop context left unfinished: close removes its hooks
    assert _hook_count(tiny_conformer) == 0 and explainer.adapter.hooks == []


# --------------------------------------------------------------------------- scoring
def test_score_book_rows_hold_means_chance_and_constant_counts() -> None:
    from conformer_xai.metrics.scoring import SCORES, ScoreBook

    book = ScoreBook()
    book.track("gradcam/fused/cnn/12")
    book.add("gradcam/fused/cnn/12", "pointing_game", torch.tensor([1.0, 0.0, 1.0]),
             torch.tensor([False, False, True]), torch.tensor([0.2, 0.2, 0.2]))
    (row,) = book.rows(3, seed=0, bootstrap=10, faithfulness_head=lambda info: info["head"])
    assert (row["method"], row["head"], row["branch"], row["block"]) == ("gradcam", "fused",
                                                                         "cnn", 12)
    assert row["pointing_game"] == pytest.approx(2 / 3)
    assert row["n_constant"]["pointing_game"] == 1 and row["n_scored"]["pointing_game"] == 3
    assert row["chance"]["pointing_game"] == pytest.approx(0.2)
    assert row["faithfulness_head"] == "fused"
    assert all(row[name] is None for name in SCORES if name != "pointing_game")
