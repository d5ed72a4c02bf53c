"""The Conformers' pretrained configs (URL, sha256 prefix, accuracy) and timm's builder path.

``timm.create_model(name, pretrained=True)`` loads through ``build_model_with_cfg`` with the
model file's ``checkpoint_filter_fn``: the OpenMMLab names are renamed there, heads are dropped
exactly when their class count differs from the model's, and the stem adapts as timm does.
"""

from __future__ import annotations

import re
import warnings

import pytest
import timm
import torch
from timm.models import adapt_input_conv, get_pretrained_cfg

from conformer_xai.models import conformer as C
from conformer_xai.models import weights as W

TTT = "conformer_tinytinytiny_patch16"  # the smallest registered Conformer (1.9 M)
HEADS = ("conv_cls_head", "trans_cls_head")


def openmmlab(state_dict: dict) -> dict:
    """OpenMMLab's key names for a state dict in the official names."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith(HEADS):
            out["head." + key] = value
            continue
        for old, new in ((".norm1.", ".ln1."), (".norm2.", ".ln2."),
                         (".mlp.fc1.", ".ffn.layers.0.0."), (".mlp.fc2.", ".ffn.layers.1.")):
            key = key.replace(old, new)
        out["backbone." + key] = value
    return out


def same_weights(model: torch.nn.Module, state_dict: dict, skip=()) -> bool:
    own = model.state_dict()
    return all(torch.equal(own[k], v) for k, v in state_dict.items() if k not in skip)


def test_urls_hashes_and_accuracies_live_in_the_pretrained_configs():
    for name in W.CONFORMER_MODELS:
        cfg = get_pretrained_cfg(name)
        assert cfg.url.startswith("https://download.openmmlab.com/mmclassification/v0/conformer/")
        assert re.search(r"-[0-9a-f]{8}\.pth$", cfg.url)  # torch.hub's sha256-prefix convention
        assert W.IMAGENET_URLS[name] == cfg.url
        assert W.IMAGENET_FILES[name] == cfg.url.rsplit("/", 1)[1]
        row = next(r for r in W.list_models() if r.name == name)
        assert (row.top1_paper, row.top1_weights, row.weights_from) == (
            cfg.top1_paper, cfg.top1_weights, cfg.weights_from)
    assert get_pretrained_cfg("conformer_tiny_patch16").top1_weights == 81.31
    assert not get_pretrained_cfg(TTT).url  # the fork's variants publish no weights
    model = timm.create_model(TTT)
    assert not {"top1_paper", "top1_weights", "weights_from"} & set(model.pretrained_cfg)
    # a model's pretrained_cfg is timm's: it goes back into the builder as it is
    again = timm.create_model(TTT, pretrained_cfg=dict(model.pretrained_cfg))
    assert again.pretrained_cfg["num_classes"] == 1000


def test_checkpoint_filter_fn_renames_openmmlab_keys_only():
    torch.manual_seed(0)
    sd = timm.create_model(TTT).state_dict()
    renamed = C.checkpoint_filter_fn(openmmlab(sd))
    assert list(renamed) == list(sd)
    assert C.checkpoint_filter_fn(sd).keys() == sd.keys()  # official (and fork) names pass


def test_builder_loads_openmmlab_state_dict_and_keeps_the_config_clean():
    torch.manual_seed(1)
    source = timm.create_model(TTT).state_dict()
    model = timm.create_model(TTT, pretrained=True,
                              pretrained_cfg_overlay=dict(state_dict=openmmlab(source)))
    assert same_weights(model, source)
    assert "state_dict" not in model.pretrained_cfg
    assert (model.pretrained_cfg["num_classes"], model.pretrained_cfg["input_size"][0]) == (1000, 3)


def test_heads_that_fit_load_and_a_one_channel_stem_adapts(tmp_path):
    torch.manual_seed(2)
    trained = timm.create_model(TTT, num_classes=3, in_chans=1)
    path = tmp_path / "fine_tuned.pth"
    torch.save({"model": trained.state_dict()}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", W.WeightsWarning)  # the heads fit: nothing is skipped
        model = timm.create_model(TTT, pretrained=True, num_classes=3, in_chans=1,
                                  pretrained_cfg_overlay=dict(file=str(path)))
    assert same_weights(model, trained.state_dict())
    rgb = timm.create_model(TTT, pretrained=True, num_classes=3,
                            pretrained_cfg_overlay=dict(file=str(path)))
    torch.testing.assert_close(rgb.conv1.weight.detach(),
                               adapt_input_conv(3, trained.conv1.weight, base_chans=1),
                               rtol=0, atol=0)
    assert same_weights(rgb, trained.state_dict(), skip=("conv1.weight",))


def test_a_file_of_another_architecture_is_refused_in_one_line(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet_micro").state_dict(), path)
    with pytest.raises(W.WeightsError, match=r"checkpoint .*resnet.pth does not fit "
                                             r"conformer_tinytinytiny_patch16: .*missing keys"):
        timm.create_model(TTT, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    with pytest.raises(ValueError, match="no OpenMMLab ImageNet weights for "
                                         "'conformer_tinytinytiny_patch16'"):
        timm.create_model(TTT, pretrained=True)
