"""Models and images for the notebooks, from their parameters cell.

A notebook's ``MODEL_WEIGHTS`` is ``"embedded"`` (the small models trained on the synthetic
scenes, shipped in the package), ``"imagenet"`` (the published weights), ``"random"``, or the
path of a Conformer checkpoint; its ``IMAGE`` is a file, or None for a benchmark scene (or the
example photo with ImageNet weights).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

NAMED_WEIGHTS = ("embedded", "imagenet", "random")
"""The weights chosen by name (every other value is a checkpoint path)."""
SYNTHETIC_WEIGHTS = ("embedded", "random")
"""The weights of the models of the synthetic scene classes."""
MODEL_TRIOS = {
    "imagenet": {"cnn": "resnet101", "conformer": "conformer_small_patch16",
                 "transformer": "deit_small_patch16_224"},
    "synthetic": {"cnn": "resnet_micro", "conformer": "conformer_micro_patch16",
                  "transformer": "deit_micro_patch16"},
}
"""The paper's three models (a CNN, Conformer, a transformer) and their micro counterparts."""
EXAMPLE_PHOTO = Path("photos") / "chelsea.png"


def _named(weights: Any) -> bool:
    return isinstance(weights, str) and weights in NAMED_WEIGHTS


def model_names(weights: str | os.PathLike, conformer_name: str = "conformer_small_patch16"
                ) -> dict[str, str]:
    """The model name of each role ("cnn", "conformer", "transformer") for a weights choice.

    ImageNet weights give the paper's models, ``"embedded"`` and ``"random"`` the micro models of
    the synthetic scenes; a checkpoint path gives only the Conformer, built as ``conformer_name``.
    """
    if weights == "imagenet":
        return dict(MODEL_TRIOS["imagenet"])
    if weights in SYNTHETIC_WEIGHTS:
        return dict(MODEL_TRIOS["synthetic"])
    return {"conformer": conformer_name}


def load_weights(name: str, weights: str | os.PathLike, device: str = "cpu") -> torch.nn.Module:
    """``cx.load_model(name, ...)`` with named weights, or with ``weights`` as a checkpoint path.

    Raises:
        FileNotFoundError: ``weights`` is neither a named set nor an existing file.
    """
    from conformer_xai import load_model

    if _named(weights):
        return load_model(name, weights=weights, device=device)
    if not Path(weights).is_file():
        raise FileNotFoundError(f"weights {str(weights)!r}: no such checkpoint file; accepted: "
                                f"{', '.join(NAMED_WEIGHTS)} or the path of a checkpoint")
    return load_model(name, checkpoint=weights, device=device)


def examples_dir(start: str | os.PathLike | None = None) -> Path:
    """The repository's ``examples/`` folder, in ``start`` (default: the working folder) or above.

    Raises:
        FileNotFoundError: No ``examples/`` folder there or in any parent.
    """
    here = Path.cwd() if start is None else Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / "examples").is_dir():
            return folder / "examples"
    raise FileNotFoundError(f"no examples/ folder in {here} or its parents; run the notebook "
                            "from the conformer-xai repository or pass an image file")


def benchmark_scene(index: int, folder: str | os.PathLike, seed: int = 0,
                    split: str = "test") -> tuple[Path, Any]:
    """Scene ``index`` of the benchmark's split, written to a PNG in ``folder`` as a user's image.

    Returns:
        The PNG's path and the :class:`conformer_xai.synthetic.Scene` (with its masks).
    """
    from PIL import Image

    from conformer_xai.synthetic import SyntheticScenes

    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"scene index must be an int >= 0, got {index!r}")
    scene = SyntheticScenes(index + 1, seed=seed, split=split).scene(index)
    path = Path(folder) / f"scene_{index:03d}_{scene.class_name}.png"
    Image.fromarray(scene.image).save(path)
    return path, scene


#: The temporary folders of :func:`work_folder` (alive as long as the kernel: removed when the
#: interpreter exits).
_WORK_FOLDERS: list[tempfile.TemporaryDirectory] = []


def work_folder(out_dir: str | os.PathLike | None = None,
                prefix: str = "conformer_xai_notebook_") -> Path:
    """The folder a notebook writes into: ``out_dir`` (created when missing), or, for None, a
    new temporary folder that lives as long as the kernel."""
    if out_dir is None:
        folder = tempfile.TemporaryDirectory(prefix=prefix)
        _WORK_FOLDERS.append(folder)
        return Path(folder.name)
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def choose_image(image: str | os.PathLike | None, weights: str | os.PathLike, scene_index: int,
                 folder: str | os.PathLike) -> tuple[Path, Any]:
    """The image a notebook explains, and its benchmark scene (None for a file).

    ``image`` when given; otherwise the example photo for ImageNet weights, or benchmark scene
    ``scene_index`` written to ``folder``.

    Raises:
        FileNotFoundError: ``image`` does not exist.
    """
    if image is not None:
        if not Path(image).is_file():
            raise FileNotFoundError(f"image {str(image)!r} not found")
        return Path(image), None
    if weights == "imagenet":
        return examples_dir() / EXAMPLE_PHOTO, None
    return benchmark_scene(scene_index, folder)


def explain_image(model: torch.nn.Module, path: str | os.PathLike,
                  methods: Sequence[str] = ("features", "gradcam"), device: str = "cpu",
                  **kwargs: Any) -> Any:
    """Explain one image file with ``model``'s preprocessing and class names.

    ``kwargs`` go to :meth:`conformer_xai.Explainer.explain`; the explanation keeps the crop the
    model saw as its display image.
    """
    from conformer_xai import Explainer, load_image
    from conformer_xai.data import class_names_for

    x, shown = load_image(path, model)
    with Explainer(model, class_names=class_names_for(model)) as explainer:
        return explainer.explain(x.to(device), methods=methods, image=shown[None], **kwargs)


def load_batch(files: Sequence[tuple[str | os.PathLike, int]], model: torch.nn.Module,
               device: str = "cpu", **load_kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Files with their labels as one input batch and a label tensor.

    Each file goes through ``cx.load_image(path, model, **load_kwargs)``.

    Raises:
        ValueError: No files.
    """
    from conformer_xai import load_image

    if not files:
        raise ValueError("load_batch needs at least one (path, label) pair")
    xs = [load_image(path, model, **load_kwargs)[0] for path, _ in files]
    labels = torch.tensor([int(label) for _, label in files], device=device)
    return torch.cat(xs).to(device), labels
