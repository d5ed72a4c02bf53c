"""Weights: every source, key conversion, adaptation, safe loading, the verified download and cache."""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models import adapt_input_conv

import conformer_xai
from conformer_xai.cli.errors import option_spelling
from conformer_xai.models import weights as W

MICRO = "conformer_micro_patch16"
TINY = "conformer_tiny_patch16"
HEADS = ("conv_cls_head.bias", "conv_cls_head.weight", "trans_cls_head.bias",
         "trans_cls_head.weight")


def to_openmmlab(state_dict: dict) -> dict:
    """OpenMMLab's names for our keys (the rename described in the reference), wrapped."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith(("conv_cls_head.", "trans_cls_head.")):
            out["head." + key] = value
            continue
        parts = key.split(".")
        renamed = []
        i = 0
        while i < len(parts):
            p = parts[i]
            if p == "norm1":
                renamed.append("ln1")
            elif p == "norm2":
                renamed.append("ln2")
            elif p == "mlp" and parts[i + 1] == "fc1":
                renamed += ["ffn", "layers", "0", "0"]
                i += 1
            elif p == "mlp" and parts[i + 1] == "fc2":
                renamed += ["ffn", "layers", "1"]
                i += 1
            else:
                renamed.append(p)
            i += 1
        out["backbone." + ".".join(renamed)] = value
    return {"meta": {"mmcls_version": "0.18.0", "CLASSES": ["a"]}, "state_dict": out}


def assert_same_weights(model: torch.nn.Module, state_dict: dict, skip=()) -> None:
    own = model.state_dict()
    for key, value in state_dict.items():
        if key in skip:
            continue
        assert torch.equal(own[key], value.to(own[key].dtype)), key


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/weights"


@pytest.fixture(scope="module")
def micro_sd() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = timm.create_model(MICRO)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def tiny_sd() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    model = timm.create_model(TINY)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An isolated torch hub cache (never the user's)."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    assert Path(torch.hub.get_dir()) == home / "hub"
    return home / "hub" / "checkpoints"


@pytest.fixture
def server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving the files in a folder."""
    root = tmp_path / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/weights", root
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def serve(root: Path, name: str, data: bytes) -> Path:
    (root / "weights").mkdir(exist_ok=True)
    path = root / "weights" / name
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- local files
@pytest.mark.parametrize("form", ["flat.pth", "model.pth", "state_dict.pt", "model_ema.pth",
                                  "module.pth", "openmmlab.pth", "flat.safetensors"])
def test_each_local_file_form_loads_exactly(form, micro_sd, tmp_path):
    path = tmp_path / f"ckpt_{form}"
    kind = form.split(".")[0]
    if kind == "flat" and path.suffix == ".safetensors":
        save_file(micro_sd, str(path))
    else:
        payload = {
            "flat": micro_sd,
            "model": {"model": micro_sd, "epoch": 3, "optimizer": {"lr": 0.1}},
            "state_dict": {"state_dict": micro_sd},
            "model_ema": {"model_ema": micro_sd},
            "module": {"module." + k: v for k, v in micro_sd.items()},
            "openmmlab": to_openmmlab(micro_sd),
        }[kind]
        torch.save(payload, path)
    model = conformer_xai.load_model(MICRO, checkpoint=path)
    assert_same_weights(model, micro_sd)
    assert model.weights_source == f"checkpoint:{path}"
    assert model.model_name == MICRO
    assert not model.training
    assert (model.num_classes, model.in_chans) == (10, 3)


def test_openmmlab_rename_on_every_published_key(tmp_path):
    import json

    keys = json.loads((Path(__file__).parent / "data" / "official_conformer_keys.json").read_text())
    for variant, shapes in keys.items():
        ours = {k: torch.zeros(1) for k in shapes}
        mm = to_openmmlab(ours)
        assert any(".ln1." in k for k in mm["state_dict"])
        assert any(".ffn.layers.0.0." in k for k in mm["state_dict"])
        assert list(W.convert_state_dict(mm)) == list(shapes), variant
    assert W.convert_state_dict({
        "backbone.conv_trans_5.trans_block.ffn.layers.1.bias": torch.zeros(1),
        "backbone.conv_trans_2.squeeze_block.ln.weight": torch.zeros(1),
        "head.trans_cls_head.weight": torch.zeros(1),
    }).keys() == {"conv_trans_5.trans_block.mlp.fc2.bias", "conv_trans_2.squeeze_block.ln.weight",
                  "trans_cls_head.weight"}
    plain = {"layer1.0.ln1.weight": torch.zeros(1), "fc.weight": torch.zeros(1)}
    assert W.convert_state_dict(plain).keys() == plain.keys()


def test_load_state_dict_file_returns_the_unwrapped_tensors(micro_sd, tmp_path):
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": micro_sd, "meta": {"epoch": 1}}, path)
    sd = W.load_state_dict_file(path)
    assert sd.keys() == micro_sd.keys()
    assert all(torch.equal(sd[k], micro_sd[k]) for k in sd)


# --------------------------------------------------------------------------- adaptation
@pytest.mark.parametrize("in_chans", [1, 2])
def test_input_channels_adapt_as_timm_does(in_chans, micro_sd, tmp_path):
    path = tmp_path / "rgb.pth"
    torch.save(micro_sd, path)
    model = conformer_xai.load_model(MICRO, checkpoint=path, in_chans=in_chans)
    expected = adapt_input_conv(in_chans, micro_sd["conv1.weight"])
    assert model.conv1.weight.shape[1] == in_chans
    torch.testing.assert_close(model.conv1.weight.detach(), expected, rtol=0, atol=0)
    if in_chans == 1:
        torch.testing.assert_close(model.conv1.weight.detach(),
                                   micro_sd["conv1.weight"].sum(1, keepdim=True))
    assert_same_weights(model, micro_sd, skip=("conv1.weight",))
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, in_chans, 64, 96))).all()


def test_fine_tuned_checkpoint_loads_with_no_extra_arguments(tmp_path):
    torch.manual_seed(2)
    trained = timm.create_model(MICRO, num_classes=3, in_chans=1).eval()
    path = tmp_path / "spectrogram_3class.pth"
    torch.save({"model": trained.state_dict()}, path)
    sd = W.convert_state_dict(W.load_state_dict_file(path))
    assert W.infer_checkpoint_config(sd, MICRO) == dict(num_classes=3, in_chans=1)
    model = conformer_xai.load_model(MICRO, checkpoint=path)
    assert (model.num_classes, model.in_chans) == (3, 1)
    x = torch.randn(2, 1, 112, 160, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), trained(x), rtol=0, atol=0)


def test_infer_checkpoint_config_for_the_comparison_models():
    for name, stem_chans in (("resnet101", 3), ("deit_small_patch16_224", 3)):
        with torch.device("meta"):
            sd = timm.create_model(name, num_classes=7, in_chans=stem_chans).state_dict()
        assert W.infer_checkpoint_config(sd, name) == dict(num_classes=7, in_chans=stem_chans)
    assert W.infer_checkpoint_config({}, TINY) == dict(num_classes=None, in_chans=None)


def test_new_head_skips_exactly_the_head_weights(micro_sd, tmp_path):
    path = tmp_path / "imagenet_like.pth"
    torch.save(micro_sd, path)
    with pytest.warns(W.WeightsWarning) as record:
        model = conformer_xai.load_model(MICRO, checkpoint=path, num_classes=3, new_head=True)
    message = str(record[0].message)
    assert f"({', '.join(HEADS)})" in message
    assert model.conv_cls_head.out_features == model.trans_cls_head.out_features == 3
    assert_same_weights(model, micro_sd, skip=HEADS)
    assert sum(k.startswith(("conv_cls_head", "trans_cls_head")) for k in micro_sd) == len(HEADS)


def test_head_mismatch_without_new_head_says_what_to_do(micro_sd, tmp_path):
    path = tmp_path / "ten_classes.pth"
    torch.save(micro_sd, path)
    with pytest.raises(W.WeightsError, match=r"10 classes.*asked for 3.*new_head=True.*"
                                             r"num_classes=10"):
        conformer_xai.load_model(MICRO, checkpoint=path, num_classes=3)


def test_deit_stem_and_head_adapt(tmp_path):
    torch.manual_seed(3)
    sd = timm.create_model("deit_micro_patch16").state_dict()
    path = tmp_path / "deit.safetensors"
    save_file(sd, str(path))
    with pytest.warns(W.WeightsWarning, match=r"\(head.bias, head.weight\)"):
        model = conformer_xai.load_model("deit_micro_patch16", checkpoint=path, in_chans=1,
                                         num_classes=4, new_head=True)
    torch.testing.assert_close(model.patch_embed.proj.weight.detach(),
                               sd["patch_embed.proj.weight"].sum(1, keepdim=True))
    assert model.head.out_features == 4
    assert_same_weights(model, sd, skip=("patch_embed.proj.weight", "head.weight", "head.bias"))


# --------------------------------------------------------------------------- bad files
def test_wrong_architecture_is_explained(micro_sd, tmp_path):
    resnet = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet_micro").state_dict(), resnet)
    with pytest.raises(W.WeightsError, match=r"does not fit conformer_micro_patch16: .*missing "
                                             r"keys.*unexpected keys"):
        conformer_xai.load_model(MICRO, checkpoint=resnet)
    wider = conformer_xai.models.Conformer(channel_ratio=0.5, embed_dim=96, num_heads=3,
                                           num_classes=10)
    path = tmp_path / "wider.pth"
    torch.save(wider.state_dict(), path)
    with pytest.raises(W.WeightsError, match=r"shape mismatches \(e\.g\. .*: checkpoint"):
        conformer_xai.load_model(MICRO, checkpoint=path)


def test_a_pickled_object_is_refused_and_never_run(micro_sd, tmp_path):
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.pth"
    torch.save({"model": micro_sd, "extra": Payload()}, evil)
    with pytest.raises(W.WeightsError, match="refused to load .*weights_only"):
        conformer_xai.load_model(MICRO, checkpoint=evil)
    assert not marker.exists()
    training = tmp_path / "training_checkpoint.pth"  # args: the one class allowed (issue 13)
    torch.save({"model": micro_sd, "args": argparse.Namespace(lr=0.1)}, training)
    assert W.load_state_dict_file(training).keys() == micro_sd.keys()
    assert W.read_checkpoint(training)[1] == {"lr": 0.1}
    nested = tmp_path / "nested.pth"  # anything else in the Namespace is still refused
    torch.save({"model": micro_sd, "args": argparse.Namespace(extra=Payload())}, nested)
    with pytest.raises(W.WeightsError, match="refused to load"):
        W.load_state_dict_file(nested)
    assert not marker.exists()


def test_corrupt_and_missing_files(micro_sd, tmp_path):
    good = tmp_path / "good.pth"
    torch.save(micro_sd, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(W.WeightsError, match="corrupt"):
        conformer_xai.load_model(MICRO, checkpoint=truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01 not a safetensors file" * 10)
    with pytest.raises(W.WeightsError, match="cannot read .*safetensors"):
        conformer_xai.load_model(MICRO, checkpoint=garbage)
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], not_a_dict)
    with pytest.raises(W.WeightsError, match="expected a state dict"):
        W.load_state_dict_file(not_a_dict)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        conformer_xai.load_model(MICRO, checkpoint=tmp_path / "nowhere.pth")
    assert issubclass(W.WeightsError, ValueError)


# --------------------------------------------------------------------------- arguments
def test_argument_errors_name_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"unknown model 'conformer_huge'.*conformer_tiny_patch16"
                                         r".*resnet101.*resnet_micro.*any timm model"):
        conformer_xai.load_model("conformer_huge", weights="random")
    with pytest.raises(ValueError, match=r"no weights given.*'imagenet', 'embedded', 'random'.*"
                                         r"checkpoint=PATH"):
        conformer_xai.load_model(MICRO)
    with pytest.raises(ValueError, match="unknown weights 'imagenet1k'"):
        conformer_xai.load_model(MICRO, weights="imagenet1k")
    with pytest.raises(ValueError, match="either"):
        conformer_xai.load_model(MICRO, weights="random", checkpoint=tmp_path / "x.pth")
    with pytest.raises(ValueError, match="resnet_micro, deit_micro_patch16, conformer_micro"):
        conformer_xai.load_model(TINY, weights="embedded")
    with pytest.raises(ValueError, match="no ImageNet weights; use weights='embedded'"):
        conformer_xai.load_model(MICRO, weights="imagenet")


def test_random_weights_are_explicit():
    model = conformer_xai.load_model(MICRO, weights="random", num_classes=3, in_chans=1)
    assert model.weights_source == "random"
    assert (model.num_classes, model.in_chans, model.model_name) == (3, 1, MICRO)
    assert not model.training
    other = conformer_xai.load_model("resnet18", weights="random", num_classes=2)
    assert other.fc.out_features == 2 and other.weights_source == "random"


def test_embedded_weights_are_read_as_float32(micro_sd, tmp_path):
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in micro_sd.items()}
    save_file(half, str(tmp_path / f"{MICRO}.safetensors"))
    sd = W._read_embedded(MICRO, root=tmp_path)
    assert sd.keys() == micro_sd.keys()
    for key, value in sd.items():
        assert value.dtype == (torch.float32 if half[key].is_floating_point() else half[key].dtype)
        assert torch.equal(value, half[key].to(value.dtype))
    model = timm.create_model(MICRO)
    W._fit_and_load(model, MICRO, sd, "embedded", new_head=False)
    assert_same_weights(model, sd)
    with pytest.raises(W.WeightsError, match="missing"):
        W._read_embedded("resnet_micro", root=tmp_path)


# --------------------------------------------------------------------------- download and cache
def test_download_checkpoint_verifies_and_writes_atomically(server, tmp_path, micro_sd):
    base, root = server
    payload = tmp_path / "payload.pth"
    torch.save(micro_sd, payload)
    digest = sha256(payload)
    name = f"micro-{digest[:8]}.pth"
    serve(root, name, payload.read_bytes())
    dest = tmp_path / "cache"
    path = W.download_checkpoint(f"{base}/{name}", digest[:8], dest)
    assert path == dest / name
    assert path.read_bytes() == payload.read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == [name]
    with pytest.raises(W.WeightsError, match=r"sha256 .* is .*but its name promises 0badf00d.*"
                                             r"nothing was written"):
        W.download_checkpoint(f"{base}/{name}", "0badf00d", tmp_path / "cache2")
    assert list((tmp_path / "cache2").iterdir()) == []
    with pytest.raises(W.DownloadError, match="HTTP 404"):
        W.download_checkpoint(f"{base}/absent-12345678.pth", "12345678", tmp_path / "cache3")
    assert list((tmp_path / "cache3").iterdir()) == []


def test_imagenet_download_converts_caches_and_is_reused(server, torch_home, tmp_path,
                                                         monkeypatch, tiny_sd):
    base, root = server
    payload = tmp_path / "payload.pth"
    torch.save(to_openmmlab(tiny_sd), payload)
    digest = sha256(payload)
    name = f"conformer-tiny-p16_generated-{digest[:8]}.pth"
    serve(root, name, payload.read_bytes())
    monkeypatch.setitem(W.IMAGENET_FILES, TINY, name)
    monkeypatch.setenv(W.BASE_URL_ENV, base)
    assert W.imagenet_url(TINY) == f"{base}/{name}"
    assert W.cached_imagenet_path(TINY) == torch_home / name
    assert not W.is_cached(TINY)

    model = conformer_xai.load_model(TINY, weights="imagenet")
    assert model.weights_source == "imagenet" and model.model_name == TINY
    assert_same_weights(model, tiny_sd)
    assert W.is_cached(TINY)
    assert sorted(p.name for p in torch_home.iterdir()) == [name]
    row = next(r for r in W.list_models() if r.name == TINY)
    assert row.cached and row.family == "conformer" and row.top1_paper == 81.3

    # The cached file is reused without network (it was verified when written).
    monkeypatch.setenv(W.BASE_URL_ENV, closed_port_url())
    via_timm = timm.create_model(TINY, pretrained=True, in_chans=1)
    torch.testing.assert_close(via_timm.conv1.weight.detach(),
                               tiny_sd["conv1.weight"].sum(1, keepdim=True))
    assert_same_weights(via_timm, tiny_sd, skip=("conv1.weight",))


def test_imagenet_download_with_wrong_content_leaves_nothing(server, torch_home, monkeypatch,
                                                             micro_sd, tmp_path):
    base, root = server
    payload = tmp_path / "not_the_published_file.pth"
    torch.save(micro_sd, payload)
    serve(root, W.IMAGENET_FILES[TINY], payload.read_bytes())  # right name, wrong content
    monkeypatch.setenv(W.BASE_URL_ENV, base + "/")
    with pytest.raises(W.WeightsError, match=r"sha256 .*promises f6860372"):
        conformer_xai.load_model(TINY, weights="imagenet")
    assert not torch_home.exists() or list(torch_home.iterdir()) == []
    assert not W.is_cached(TINY)


@pytest.mark.parametrize("where", ["closed port", "missing file"])
def test_offline_with_nothing_cached_gives_one_line(where, server, torch_home, monkeypatch):
    base, _ = server
    url_base = closed_port_url() if where == "closed port" else base
    monkeypatch.setenv(W.BASE_URL_ENV, url_base)
    with pytest.raises(W.WeightsError) as info:
        conformer_xai.load_model("conformer_small_patch32", weights="imagenet")
    message = str(info.value)
    assert "\n" not in message
    assert f"{url_base}/{W.IMAGENET_FILES['conformer_small_patch32']}" in message
    assert str(torch_home / W.IMAGENET_FILES["conformer_small_patch32"]) in message
    assert "checkpoint=PATH" in message
    assert "--checkpoint PATH" in info.value.render(option_spelling)  # the CLI's words
    assert ("refused" in message) if where == "closed port" else ("HTTP 404" in message)
    assert not torch_home.exists() or list(torch_home.iterdir()) == []


def test_imagenet_head_mismatch_is_refused_before_downloading(torch_home, monkeypatch):
    monkeypatch.setenv(W.BASE_URL_ENV, closed_port_url())
    with pytest.raises(W.WeightsError, match=r"1000 classes.*asked for 3.*new_head=True"):
        conformer_xai.load_model("conformer_base_patch16", weights="imagenet", num_classes=3)
    assert not torch_home.exists()


def test_pretrained_file_overlay_through_timm(micro_sd, tiny_sd, tmp_path):
    path = tmp_path / "local_copy.pth"
    torch.save(to_openmmlab(tiny_sd), path)
    with pytest.warns(W.WeightsWarning, match="skipped the checkpoint's head weights"):
        model = timm.create_model(TINY, pretrained=True, num_classes=3,
                                  pretrained_cfg_overlay=dict(file=str(path)))
    assert model.conv_cls_head.out_features == 3
    assert_same_weights(model, tiny_sd, skip=HEADS)


def test_timm_models_pretrained_offline_and_head_checks(tmp_path, monkeypatch):
    with pytest.raises(W.WeightsError, match=r"1000 classes.*asked for 3.*new_head=True"):
        conformer_xai.load_model("resnet101", weights="imagenet", num_classes=3)
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    assert not W.is_cached("deit_small_patch16_224")
    with pytest.raises(W.WeightsError) as info:
        conformer_xai.load_model("deit_small_patch16_224", weights="imagenet")
    message = str(info.value)
    assert "\n" not in message
    assert "timm's pretrained weights for deit_small_patch16_224 (LocalEntryNotFoundError" in message
    assert "checkpoint=PATH" in message
    assert "--checkpoint PATH" in info.value.render(option_spelling)  # the CLI's words


def test_list_models_rows():
    rows = {r.name: r for r in W.list_models()}
    assert set(rows) == set(W.KNOWN_MODELS)
    assert (rows["conformer_base_patch16"].top1_paper,
            rows["conformer_base_patch16"].top1_weights) == (84.1, 83.82)
    assert rows["conformer_small_patch32"].top1_paper is None
    assert rows["conformer_small_patch32"].top1_weights == 81.96
    assert rows["resnet101"].weights_from.startswith("timm")
    assert rows["deit_small_patch16_224"].top1_paper == 79.8
    assert rows["resnet_micro"].sources[0] == "embedded"
    assert rows["deit_micro_patch16"].family == "vit"


def test_download_of_a_server_that_never_answers_times_out(tmp_path):
    # a listening socket that accepts connections and never sends a byte
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/weights-0123abcd.pth"
    before = socket.getdefaulttimeout()
    try:
        with pytest.raises(W.DownloadError, match="cannot download .*timed out"):
            W.download_checkpoint(url, "0123abcd", tmp_path, timeout=0.5)
    finally:
        silent.close()
    assert socket.getdefaulttimeout() == before  # the process's default is restored
    assert list(tmp_path.iterdir()) == []
