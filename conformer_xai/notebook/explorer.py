"""The map explorer of notebook 02: any map of a few images, one explanation per image, cached."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from matplotlib.figure import Figure


class MapExplorer:
    """Draws one map for a choice of image, head, branch, method and block.

    Each image is explained once, on first use, for every method and head given; later choices
    for that image read the cached explanation. Methods with maps on one branch only (attention,
    rollout) ignore the branch chosen; methods without blocks (rollout) ignore the block.

    Args:
        model: The model to explain.
        images: Name -> ``(x, pixels)``: the input ``(1, C, H, W)`` and its display image.
        heads: Classifier heads to explain.
        methods: Methods to explain.
        class_names: Class names for the titles.
        device: Where the inputs go.
    """

    def __init__(self, model: torch.nn.Module, images: Mapping[str, tuple[torch.Tensor, Any]],
                 heads: Sequence[str], methods: Sequence[str],
                 class_names: Sequence[str] | None = None, device: str = "cpu") -> None:
        if not images:
            raise ValueError("MapExplorer needs at least one image")
        self.model = model
        self.images = dict(images)
        self.heads = tuple(heads)
        self.methods = tuple(methods)
        self.class_names = None if class_names is None else list(class_names)
        self.device = device
        self._cache: dict[str, Any] = {}

    def explanation(self, image: str) -> Any:
        """The explanation of ``image`` (computed on first use).

        Raises:
            ValueError: ``image`` is not one of the explorer's images.
        """
        from conformer_xai import Explainer

        if image not in self.images:
            raise ValueError(f"unknown image {image!r}; accepted: {', '.join(self.images)}")
        if image not in self._cache:
            x, pixels = self.images[image]
            with Explainer(self.model, class_names=self.class_names) as explainer:
                self._cache[image] = explainer.explain(
                    x.to(self.device), head=self.heads, methods=self.methods,
                    image=torch.as_tensor(pixels)[None])
        return self._cache[image]

    def figure(self, image: str, head: str, branch: str, method: str, block: int) -> Figure:
        """The map for one choice of the controls, titled with what it shows."""
        from conformer_xai.explain.result import parse_key
        from conformer_xai.plot import METHOD_LABELS, map_panel

        e = self.explanation(image)
        keys = e.find(method)
        if not keys:
            raise ValueError(f"method {method!r} not explained; accepted: "
                             f"{', '.join(self.methods)}")
        parts = [parse_key(k) for k in keys]
        branches = {p["branch"] for p in parts}
        if branch not in branches:
            branch = sorted(branches, key=str)[0]
        k = block if any(p["block"] is not None for p in parts) else None
        uses_head = any(p["head"] is not None for p in parts)
        m = e.get(method, branch, k, head=head)[0]
        t = int(e.target[0])
        where = f"{branch} branch" + ("" if k is None else f" · block {k}")
        p = e.probs[head][0, t]
        title = (f"{METHOD_LABELS.get(method, method)} · {where}\n"
                 + (f"{head} head, p({e.class_name(t)}) = {p:.2f}" if uses_head
                    else f"target: {e.class_name(t)}"))
        if not bool(m.max() > 0):
            title += " · all-zero map"
        return map_panel(m, e.image[0], title=title)
