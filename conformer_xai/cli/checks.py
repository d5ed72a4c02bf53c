"""Checks of the commands' inputs before the work starts, and the model loaded under them.

Model names, architectures, weights options and devices are checked here (usage errors, exit
code 2, mostly before torch loads); :func:`load_model` maps the loader's errors to exit codes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import CliRuntimeError, CliUsageError, describe
from .options import EMBEDDED_MODELS, OUR_MODELS


def check_model_name(name: str) -> None:
    """Raise a usage error unless ``name`` is one of ours or a timm model name.

    Our names are checked without importing anything; other names import timm.
    """
    if name in OUR_MODELS:
        return
    import timm

    import conformer_xai  # noqa: F401  (registers our names with timm)

    if not (timm.is_model(name) or timm.is_model(name.lower())):  # fork names: Conformer_...
        close = timm.list_models(f"*{name.split('_')[0]}*")[:5] if name else []
        hint = f"; similar timm names: {', '.join(close)}" if close else ""
        raise CliUsageError(f"unknown model {name!r}; ours are {', '.join(OUR_MODELS)}, "
                            f"or give any timm model name{hint}")


def check_architecture(name: str, input_size: tuple[int, int] | None = None) -> None:
    """Usage errors that the model's architecture shows before any weights load: a model family
    the explainer has no adapter for (``--model``) and an ``--input-size`` the model cannot take.

    The model is built on the meta device (no weights, no memory, no download). A model that
    cannot be built there is left to the real load to report.
    """
    import timm
    import torch

    import conformer_xai  # noqa: F401  (registers our names with timm)
    from conformer_xai.explain.taps import adapter_for

    try:
        with torch.device("meta"):
            net = timm.create_model(name, pretrained=False)
    except Exception:  # noqa: BLE001  (any failure here is the real load's to report)
        return
    try:
        adapter = adapter_for(net)
    except ValueError as exc:
        raise CliUsageError(f"--model {name}: {describe(exc)}") from exc
    embed = getattr(net, "patch_embed", None)
    if input_size is None or adapter.family != "vit" or getattr(embed, "img_size", None) is None:
        return  # Conformer pads its input; a CNN takes any size the explainer accepts
    (h, w), (ph, pw) = input_size, embed.patch_size
    if embed.strict_img_size and tuple(embed.img_size) != (h, w):
        fixed = "x".join(map(str, embed.img_size))
        raise CliUsageError(f"--input-size {h}x{w}: {name} takes only {fixed} (its patch "
                            "embedding has a fixed input size)")
    if not embed.dynamic_img_pad and (h % ph or w % pw):
        near = f"{-(-h // ph) * ph}x{-(-w // pw) * pw}"  # rounded up
        raise CliUsageError(f"--input-size {h}x{w}: {name} takes heights that are multiples of "
                            f"{ph} and widths that are multiples of {pw} (its patch size), e.g. "
                            f"{near}")


def check_weights(model: str | None, weights: str | None, checkpoint: str | None) -> None:
    """Usage checks on the weights options that need no import."""
    if weights is not None and checkpoint is not None:
        raise CliUsageError("give either --weights or --checkpoint, not both (a checkpoint file "
                            "needs no --weights)")
    if weights == "embedded" and model not in EMBEDDED_MODELS:
        raise CliUsageError(f"--weights embedded exists only for {', '.join(EMBEDDED_MODELS)}; "
                            f"not for {model!r}")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise CliUsageError(f"--checkpoint {checkpoint}: no such file")


def default_weights(model: str | None, weights: str | None, checkpoint: str | None
                    ) -> str | None:
    """The weights source when none is given: a checkpoint needs none; the small models use
    their embedded weights; every other model its published ImageNet weights."""
    if weights is not None or checkpoint is not None:
        return weights
    return "embedded" if model in EMBEDDED_MODELS else "imagenet"


def resolve_device(device: str) -> str:
    """``--device``: ``auto`` -> ``cuda`` when a GPU is present, else ``cpu`` (as
    :func:`conformer_xai.devices.resolve_device` decides); ``cuda`` without a GPU fails."""
    import torch

    from conformer_xai.devices import resolve_device as resolve

    if device == "cuda" and not torch.cuda.is_available():
        raise CliRuntimeError("--device cuda: no CUDA GPU is available here (use --device cpu "
                              "or auto)")
    return resolve(None if device == "auto" else device).type


def load_model(name: str | None, weights: str | None, checkpoint: str | None = None,
               num_classes: int | None = None, in_chans: int | None = None,
               new_head: bool = False, device: str = "cpu", **options: Any) -> Any:
    """``conformer_xai.load_model`` with its errors mapped to exit codes.

    ``name`` may be None with a checkpoint (the name comes from the file); ``options`` are
    ``ema``, ``num_heads`` and ``size_mismatch``.

    ``WeightsError`` (checkpoint and download problems) is a runtime error (1); any other
    ``ValueError`` means the options do not fit together, a usage error (2).
    """
    from conformer_xai.models.weights import WeightsError
    from conformer_xai.models.weights import load_model as _load_model

    try:
        return _load_model(name, weights=default_weights(name, weights, checkpoint),
                           checkpoint=checkpoint, num_classes=num_classes, in_chans=in_chans,
                           new_head=new_head, device=device, **options)
    except WeightsError as exc:
        raise CliRuntimeError(describe(exc)) from exc
    except FileNotFoundError as exc:
        raise CliRuntimeError(describe(exc)) from exc
    except ValueError as exc:
        raise CliUsageError(describe(exc)) from exc
    except (OSError, RuntimeError) as exc:
        raise CliRuntimeError(f"cannot load {name or checkpoint}: {describe(exc)}") from exc


def weights_notes(model: Any) -> list[str]:
    """Notes that must accompany every output of a model with random weights (the messages
    that every explanation of it records in ``meta["warnings"]``)."""
    from conformer_xai.explain.caveats import warning_messages, weights_warnings

    return warning_messages({"warnings": weights_warnings(
        getattr(model, "model_name", None), getattr(model, "weights_source", None))})
