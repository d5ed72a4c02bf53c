"""The model loader names its settings the Python way, and the CLI renders them as its options
(:class:`conformer_xai.errors.SettingMessage`), with no rewriting of message text."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import pytest
import torch

import conformer_xai as cx
import conformer_xai.cli.errors as cli_errors
from conformer_xai.cli.errors import cli_message, describe
from conformer_xai.errors import SettingError, SettingMessage
from conformer_xai.models.checkpoints import CheckpointWarning
from conformer_xai.models.conformer import Conformer
from conformer_xai.models.errors import WeightsError

MICRO = "conformer_micro_patch16"
SMALL = dict(channel_ratio=0.25, embed_dim=48, num_heads=3, depth=3, num_classes=3)


def raised(**kwargs) -> BaseException:
    with pytest.raises(ValueError) as info:
        cx.load_model(**kwargs)
    return info.value


@pytest.mark.parametrize(("kwargs", "python", "cli"), [
    (dict(name=MICRO, weights="random", ema=True),
     "ema=True reads a checkpoint's model_ema weights: pass checkpoint=PATH",
     "--ema reads a checkpoint's model_ema weights: pass --checkpoint PATH"),
    (dict(name=MICRO), "pass weights=NAME (one of 'imagenet', 'embedded', 'random'), or "
     "checkpoint=PATH", "pass --weights NAME (one of 'imagenet', 'embedded', 'random'), or "
     "--checkpoint PATH"),
    (dict(name=MICRO, weights="random", checkpoint="a.pth"),
     "pass either weights='random' or checkpoint='a.pth', not both",
     "pass either --weights random or --checkpoint a.pth, not both"),
    (dict(name="resnet_micro", weights="imagenet"), "use weights='embedded'",
     "use --weights embedded"),
    (dict(name="resnet_micro", weights="random", size_mismatch="pad"),
     "size_mismatch applies to Conformer models only", "--size-mismatch applies to Conformer"),
    (dict(name="resnet101", weights="embedded"), "weights='embedded' exists only for",
     "--weights embedded exists only for"),
])
def test_loader_errors_name_python_settings_and_cli_options(kwargs, python, cli) -> None:
    exc = raised(**kwargs)
    assert isinstance(exc, SettingError)
    assert python in str(exc) and cli in describe(exc)


def test_weights_errors_stay_value_errors_and_carry_settings(tmp_path: Path) -> None:
    model = Conformer(**SMALL)
    path = tmp_path / "bare.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(WeightsError) as info:
        cx.load_model(checkpoint=path, ema=True, num_heads=3)
    assert isinstance(info.value, ValueError) and isinstance(info.value, SettingMessage)
    assert "holds no model_ema weights (ema=True)" in str(info.value)
    assert "holds no model_ema weights (--ema)" in describe(info.value)
    with pytest.raises(WeightsError) as info:
        cx.load_model(checkpoint=path, num_classes=5, num_heads=3)
    assert "pass new_head=True to start new heads, or num_classes=3" in str(info.value)
    assert "pass --new-head to start new heads, or --num-classes 3" in describe(info.value)
    assert str(WeightsError("plain {text}")) == "plain {text}"  # a plain message still works


def test_warnings_and_the_input_size_error_in_both_spellings(tmp_path: Path) -> None:
    path = tmp_path / "bare.pth"
    torch.save(Conformer(**SMALL).state_dict(), path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cx.load_model(checkpoint=path)
    guessed = [w.message for w in caught if isinstance(w.message, CheckpointWarning)]
    assert guessed and "pass num_heads=N if" in str(guessed[0])
    assert "pass --num-heads N if" in cli_message(guessed[0])
    with pytest.raises(SettingError) as info:
        Conformer(**SMALL).eval()(torch.zeros(1, 3, 16, 64))
    assert str(info.value).startswith("input height and width must be >= 32")
    assert describe(info.value).startswith("the input (--input-size) height and width must be")
    with pytest.raises(SettingError, match="size_mismatch must be one of 'pad', 'resize'") as info:
        Conformer(**SMALL, size_mismatch="crop")
    assert describe(info.value).startswith("--size-mismatch must be one of")


def test_the_cli_rewrites_no_message_text() -> None:
    source = inspect.getsource(cli_errors)
    assert "import re" not in source and "re.sub" not in source
