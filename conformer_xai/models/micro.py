"""The three small models trained on the synthetic scenes, registered with timm.

* ``conformer_micro_patch16``: the 12-block, two-branch Conformer (channel_ratio 0.25,
  embed_dim 96, 3 attention heads), about 1.53 M parameters.
* ``resnet_micro``: a timm ``ResNet`` with Bottleneck blocks, layers (2, 2, 2, 2) and widths
  (24, 48, 96, 192), about 1.99 M parameters.
* ``deit_micro_patch16``: a timm ``VisionTransformer`` (DeiT-style, class token, 12 blocks,
  embed_dim 96, 3 heads), about 1.42 M parameters.

All take 128x128 RGB inputs normalised with ImageNet's mean and std and predict the
:data:`conformer_xai.synthetic.CLASS_NAMES`. ``pretrained=True`` loads the weights shipped in
``conformer_xai/weights/<name>.safetensors`` (the embedded default).
"""

from __future__ import annotations

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import Bottleneck, ResNet
from timm.models.vision_transformer import VisionTransformer

from ..names import EMBEDDED_IMAGE_MODELS
from ..synthetic.scenes import MEAN, NUM_CLASSES, STD
from .conformer import Conformer, conformer_feature_cfg

#: The small models, whose trained weights ship inside the package.
MICRO_MODELS: tuple[str, ...] = EMBEDDED_IMAGE_MODELS

#: Constructor arguments of each small model.
MICRO_ARGS: dict[str, dict] = {
    "conformer_micro_patch16": dict(patch_size=16, channel_ratio=0.25, embed_dim=96, num_heads=3,
                                    depth=12),
    "resnet_micro": dict(block=Bottleneck, layers=(2, 2, 2, 2), channels=(24, 48, 96, 192)),
    "deit_micro_patch16": dict(img_size=128, patch_size=16, embed_dim=96, depth=12, num_heads=3,
                               class_token=True, global_pool="token", dynamic_img_size=True),
}


def _cfg(first_conv: str, classifier: str | tuple[str, ...], **kwargs) -> dict:
    return {
        "url": "",
        "num_classes": NUM_CLASSES,
        "input_size": (3, 128, 128),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": MEAN,
        "std": STD,
        "first_conv": first_conv,
        "classifier": classifier,
        "license": "apache-2.0",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "conformer_micro_patch16.synthetic": _cfg("conv1", ("conv_cls_head", "trans_cls_head")),
    "resnet_micro.synthetic": _cfg("conv1", "fc"),
    "deit_micro_patch16.synthetic": _cfg("patch_embed.proj", "head"),
})


def _classifier_keys(model: torch.nn.Module) -> tuple[str, ...]:
    classifier = model.pretrained_cfg["classifier"]
    return (classifier,) if isinstance(classifier, str) else tuple(classifier)


def _load_embedded(model: torch.nn.Module, name: str) -> None:
    """Load the shipped weights; a classifier of another class count keeps its fresh init."""
    from .embedded import load_embedded_state_dict

    state = {k: v.to(torch.float32) for k, v in load_embedded_state_dict(name).items()}
    own = model.state_dict()
    heads = _classifier_keys(model)
    for key in [k for k, v in state.items() if k in own and own[k].shape != v.shape]:
        if not key.startswith(tuple(h + "." for h in heads)):
            raise ValueError(f"{name}: embedded weight {key!r} has shape {tuple(state[key].shape)}"
                             f" but the model expects {tuple(own[key].shape)}; only the "
                             f"classifier ({', '.join(heads)}) may differ")
        del state[key]
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(tuple(h + "." for h in heads))]
    if missing or unexpected:
        raise ValueError(f"{name}: embedded weights do not match the model "
                         f"(missing {missing}, unexpected {unexpected})")


def _create(cls: type, name: str, pretrained: bool, **kwargs) -> torch.nn.Module:
    kwargs = {**MICRO_ARGS.get(name, {}), **kwargs}
    extra = {}
    if cls is VisionTransformer:
        extra["feature_cfg"] = dict(out_indices=kwargs.pop("out_indices", 3), feature_cls="getter")
    elif cls is Conformer:
        extra["feature_cfg"] = conformer_feature_cfg(kwargs)
    model = build_model_with_cfg(cls, name, pretrained=False, **extra, **kwargs)
    if pretrained:
        _load_embedded(model, name)
    return model


@register_model
def conformer_micro_patch16(pretrained: bool = False, **kwargs) -> Conformer:
    """Conformer micro, patch 16 (1.53 M parameters), trained on the synthetic scenes."""
    return _create(Conformer, "conformer_micro_patch16", pretrained, **kwargs)


@register_model
def resnet_micro(pretrained: bool = False, **kwargs) -> ResNet:
    """Bottleneck ResNet micro (1.99 M parameters), trained on the synthetic scenes."""
    return _create(ResNet, "resnet_micro", pretrained, **kwargs)


@register_model
def deit_micro_patch16(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """DeiT-style ViT micro, patch 16 (1.42 M parameters), trained on the synthetic scenes."""
    return _create(VisionTransformer, "deit_micro_patch16", pretrained, **kwargs)


# --------------------------------------------------------------------------- audio
#: Constructor arguments of the small spectrogram Conformer (1 channel, depth 3).
MICRO_AUDIO_ARGS: dict = dict(patch_size=16, in_chans=1, channel_ratio=0.25, embed_dim=96,
                              num_heads=3, depth=3)


def _audio_cfg() -> dict:
    from ..synthetic.sounds import SOUND_NUM_CLASSES

    return _cfg("conv1", ("conv_cls_head", "trans_cls_head"), num_classes=SOUND_NUM_CLASSES,
                input_size=(1, 224, 224), interpolation="bicubic", mean=(0.0,), std=(1.0,))


default_cfgs.update(generate_default_cfgs({"conformer_micro_audio.synthetic": _audio_cfg()}))


@register_model
def conformer_micro_audio(pretrained: bool = False, **kwargs) -> Conformer:
    """Spectrogram Conformer micro (depth 3, 1 channel), trained on the synthetic sound scenes.

    Input: the fork's folded log-mel spectrogram in dB, ``(1, 224, 224)`` for 448 frames, not
    normalised (see :func:`conformer_xai.load_audio`).
    """
    return _create(Conformer, "conformer_micro_audio", pretrained,
                   **{**MICRO_AUDIO_ARGS, **kwargs})
