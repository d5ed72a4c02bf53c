"""Method options carried by the specs (issue 16, remaining item 3) and the own-pass-only run
without a main pass (item 1): API, meta, errors, and the console script's flags."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conformer_xai import Explainer, Explanation

SCRIPT = Path(sys.executable).parent / "conformer-xai"
SCENE = Path(__file__).resolve().parent.parent / "examples" / "scenes" / "scene_000.png"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def one_error_line(done: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    assert done.returncode == code, (done.returncode, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("conformer-xai: error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def test_ig_steps_and_smoothgrad_samples_change_the_maps_and_are_recorded(tiny_conformer,
                                                                          images):
    with Explainer(tiny_conformer) as explainer:
        few = explainer.explain(images, target=[1, 2], methods=["integrated_gradients",
                                                                "smoothgrad"],
                                method_options={"integrated_gradients": {"steps": 2},
                                                "smoothgrad": {"samples": 2, "noise": 0.3}})
        more = explainer.explain(images, target=[1, 2], methods=["integrated_gradients",
                                                                 "smoothgrad"],
                                 method_options={"integrated_gradients": {"steps": 8},
                                                 "smoothgrad": {"samples": 3}})
        default = explainer.explain(images, target=[1, 2], methods=["integrated_gradients"],
                                    blocks=[1])
    assert few.meta["method_options"] == {"integrated_gradients": {"steps": 2},
                                          "smoothgrad": {"samples": 2, "noise": 0.3}}
    assert more.meta["method_options"]["smoothgrad"] == {"samples": 3, "noise": 0.15}
    assert default.meta["method_options"] == {"integrated_gradients": {"steps": 50}}
    for key in ("integrated_gradients/fused", "smoothgrad/fused"):
        assert not torch.allclose(few.raw[key], more.raw[key]), key
    # more steps converge towards the 50-step integral
    err = {n: (e.raw["integrated_gradients/fused"] - default.raw["integrated_gradients/fused"])
           .abs().sum().item() for n, e in (("few", few), ("more", more))}
    assert err["more"] < err["few"]


@pytest.mark.parametrize("options,fragment", [
    ({"integrated_gradients": {"steps": 0}}, "steps' must be an int >= 1"),
    ({"integrated_gradients": {"steps": 2.5}}, "steps' must be an int >= 1"),
    ({"integrated_gradients": {"steps": True}}, "steps' must be an int >= 1"),
    ({"smoothgrad": {"noise": 0}}, "noise' must be a finite number > 0"),
    ({"smoothgrad": {"noise": float("nan")}}, "noise' must be a finite number > 0"),
    ({"smoothgrad": {"sample": 3}}, "unknown smoothgrad option 'sample'; accepted: samples, noise"),
    ({"gradcam": {"steps": 3}}, "'gradcam' has no options; methods with options: lrp"),
    ({"lrp": {"composite": "zplus"}}, "must be one of epsilon, epsilon_gamma_box"),
    ({"lrp": 3}, "method_options['lrp'] must be a dict"),
    ([("lrp", {})], "method_options must be a dict"),
])
def test_bad_method_options_raise_value_error(tiny_conformer, images, options, fragment):
    with Explainer(tiny_conformer) as explainer, pytest.raises(ValueError, match=None) as err:
        explainer.explain(images, methods=["gradcam"], method_options=options)
    assert fragment in str(err.value)


def test_lrp_composite_argument_is_the_lrp_option(tiny_conformer, images):
    with Explainer(tiny_conformer) as explainer:
        exp = explainer.explain(images, methods=["lrp", "attnlrp"], blocks=[12],
                                lrp_composite="epsilon_gamma_box",
                                method_options={"attnlrp": {"composite": "epsilon"}})
    assert exp.meta["method_options"] == {"lrp": {"composite": "epsilon_gamma_box"},
                                          "attnlrp": {"composite": "epsilon"}}


def test_lrp_alone_runs_no_main_pass(tiny_conformer, images):
    """Only own-pass methods: one forward pass (LRP's), whose logits and top-1 target are the
    main pass's."""
    calls = []
    handle = tiny_conformer.conv1.register_forward_hook(lambda *_: calls.append(1))  # the stem
    try:
        with Explainer(tiny_conformer) as explainer:
            alone = explainer.explain(images, methods=["lrp"], head=("fused", "cnn"),
                                      blocks=[12])
            forwards = len(calls)
            main = explainer.explain(images, methods=["gradcam", "lrp"], head=("fused", "cnn"),
                                     blocks=[12])
    finally:
        handle.remove()
    assert forwards == 1
    assert len(calls) == 3  # with a main-pass method: the main pass and LRP's
    torch.testing.assert_close(alone.target, main.target)
    for head in ("fused", "cnn", "transformer"):
        torch.testing.assert_close(alone.logits[head], main.logits[head])
    for key in ("lrp/fused", "lrp/cnn", "lrp/fused/cnn/12"):
        torch.testing.assert_close(alone.raw[key], main.raw[key])


def test_smoothgrad_alone_resolves_the_target_with_one_plain_forward(tiny_conformer, images):
    with Explainer(tiny_conformer) as explainer:
        alone = explainer.explain(images, methods=["smoothgrad"],
                                  method_options={"smoothgrad": {"samples": 2}})
        main = explainer.explain(images, methods=["features"], blocks=[1])
    torch.testing.assert_close(alone.target, main.target)
    torch.testing.assert_close(alone.logits["fused"], main.logits["fused"])


def test_cli_method_options_reach_the_run(tmp_path: Path):
    out = tmp_path / "out"
    done = run("explain", SCENE, "--model", "conformer_micro_patch16", "--weights", "embedded",
               "--methods", "integrated_gradients,xgradcam,gradcam_elementwise", "--ig-steps", "3",
               "--blocks", "12", "--head", "fused", "--out", out, "--save-arrays")
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "scene_000.json").read_text())
    assert summary["method_options"] == {"integrated_gradients": {"steps": 3}}
    assert "integrated_gradients/fused" in summary["maps"]
    for method in ("xgradcam", "gradcam_elementwise"):
        assert f"{method}/fused/cnn/12" in summary["maps"]
        assert f"{method}/fused/transformer/12" in summary["maps"]
    saved = Explanation.load(out / "scene_000.maps.npz")
    assert saved.meta["method_options"] == {"integrated_gradients": {"steps": 3}}
    assert "gradcam_elementwise/fused/transformer/12" in saved.maps


@pytest.mark.parametrize("args,fragments", [
    (("--methods", "gradcam", "--lrp-composite", "epsilon"),
     ("--lrp-composite applies to lrp or attnlrp; add it to --methods",)),
    (("--ig-steps", "2"), ("--ig-steps applies to integrated_gradients",)),
    (("--methods", "integrated_gradients", "--ig-steps", "0"), ("--ig-steps", "x>=1")),
    (("--methods", "smoothgrad", "--smoothgrad-noise", "0"), ("--smoothgrad-noise", "x>0")),
    (("--methods", "lrp", "--lrp-composite", "zplus"), ("--lrp-composite", "epsilon_gamma_box")),
    (("--methods", "xgradcam,nope"), ("'nope'", "xgradcam", "gradcam_elementwise")),
])
def test_cli_bad_method_options_exit_2_with_one_line(tmp_path: Path, args, fragments):
    out = tmp_path / "out"
    one_error_line(run("explain", SCENE, "--model", "conformer_micro_patch16", "--weights",
                       "embedded", "--out", out, *args), 2, *fragments)
    assert not out.exists()


def test_explain_dataset_records_method_options_and_resumes_only_with_them(tmp_path: Path):
    from conformer_xai.batch.store import MapStore

    images = tmp_path / "images"
    images.mkdir()
    for name in ("scene_000.png", "scene_001.png"):
        (images / name).write_bytes((SCENE.parent / name).read_bytes())
    store = tmp_path / "store"
    common = ("explain-dataset", images, "--out", store, "--model", "conformer_micro_patch16",
              "--weights", "embedded", "--methods", "smoothgrad", "--num-workers", "0",
              "--device", "cpu")
    done = run(*common, "--smoothgrad-samples", "2")
    assert done.returncode == 0, done.stderr
    assert MapStore(store).config["method_options"] == {"smoothgrad": {"samples": 2,
                                                                       "noise": 0.15}}
    # the same options resume (nothing left to do); other options are other settings
    assert run(*common, "--smoothgrad-samples", "2").returncode == 0
    one_error_line(run(*common, "--smoothgrad-samples", "3"), 2, "other settings",
                   "method_options", "--force")
    one_error_line(run(*common, "--ig-steps", "3"), 2,
                   "--ig-steps applies to integrated_gradients")


def test_evaluate_passes_method_options_to_the_explainer():
    from conformer_xai.metrics import evaluate

    kwargs = dict(weights="embedded", n=2, methods=["integrated_gradients"], batch_size=2,
                  faithfulness="none", randomisation=False, bootstrap=10)
    few = evaluate("resnet_micro", method_options={"integrated_gradients": {"steps": 2}},
                   **kwargs)
    more = evaluate("resnet_micro", method_options={"integrated_gradients": {"steps": 6}},
                    **kwargs)
    assert few["meta"]["method_options"] == {"integrated_gradients": {"steps": 2}}
    energy = [[r["energy_pointing_game"] for r in res["rows"]] for res in (few, more)]
    assert energy[0] != energy[1]
    with pytest.raises(ValueError, match="steps' must be an int >= 1"):
        evaluate("resnet_micro", method_options={"integrated_gradients": {"steps": 0}},
                 **kwargs)


def test_cli_evaluate_method_option_without_its_method_is_a_usage_error():
    one_error_line(run("evaluate", "--model", "resnet_micro", "--n", "2", "--methods", "gradcam",
                       "--smoothgrad-samples", "4"), 2,
                   "--smoothgrad-samples applies to smoothgrad; add it to --methods")


def test_a_store_from_before_method_options_resumes_with_the_default_options(tmp_path: Path,
                                                                               tiny_conformer):
    import zarr
    from PIL import Image

    from conformer_xai.batch import run_dataset
    from conformer_xai.batch.store import ATTR, MapStore

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(((torch.rand(64, 64, 3) * 255).byte()).numpy()).save(images / "a.png")
    store = tmp_path / "store"
    kwargs = dict(methods=["smoothgrad"], num_workers=0, device="cpu", input_size=64, batch_size=1)
    run_dataset(images, store, tiny_conformer, **kwargs)
    group = zarr.open_group(str(store), mode="r+")
    config = dict(group.attrs[ATTR])
    assert config.pop("method_options") == {"smoothgrad": {"samples": 50, "noise": 0.15}}
    group.attrs[ATTR] = config  # as an earlier version wrote it: no method_options
    assert run_dataset(images, store, tiny_conformer, **kwargs)["already_done"] == 1
    with pytest.raises(ValueError, match="other settings \\(method_options\\)"):
        run_dataset(images, store, tiny_conformer,
                    method_options={"smoothgrad": {"samples": 2}}, **kwargs)
    assert "method_options" not in MapStore(store).config
