"""``explain``'s run: the inputs explained batch by batch, each image's figure, arrays and JSON
summary written, the files that fail recorded."""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from .errors import CliUsageError, describe
from .explain_inputs import EMBEDDED_ON_PHOTO, SPECTRO_KINDS, ImageJob, input_kind
from .output import write_json


@dataclass
class BatchRun:
    """Explains the jobs batch by batch and writes each image's outputs.

    A file that cannot be read or written is recorded in :attr:`failures` and the run goes on
    (with ``debug`` the error is raised instead); an option the explainer rejects stops the run
    as a usage error.
    """

    net: Any
    model: str
    source: str
    device: str
    fmt: str
    input_size: tuple[int, int] | None
    crop: bool
    force: bool
    debug: bool
    quiet: bool
    array_as_image: bool = False
    audio_config: dict[str, Any] | None = None
    summaries: list[dict[str, Any]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def run(self, jobs: list[ImageJob], batch_size: int, class_names: list[str] | None,
            heads: tuple[str, ...] | None, options: dict[str, Any]) -> None:
        from tqdm import tqdm

        from conformer_xai.explain import Explainer

        try:
            explainer = Explainer(self.net, class_names=class_names)
        except ValueError as exc:  # a model family without an adapter
            raise CliUsageError(f"--model {self.model}: {describe(exc)}") from exc
        quiet_bar = len(jobs) < 2 or not sys.stderr.isatty()  # no bar mixed into a log file
        with explainer, tqdm(total=len(jobs), unit="image", file=sys.stderr, disable=quiet_bar,
                             leave=False) as bar:
            options = {**options, "head": heads or tuple(explainer.heads)}
            for start in range(0, len(jobs), batch_size):
                loaded = []
                for job in jobs[start:start + batch_size]:
                    item = self.load(job)
                    if item is None:
                        bar.update(1)
                    else:
                        loaded.append(item)
                for group in _same_shape_groups(loaded):
                    for job, exp in self.explain(explainer, group, options):
                        if self.write(job, exp) and not self.quiet:
                            bar.write(_human_line(job, exp))
                        bar.update(1)

    def fail(self, job: ImageJob, exc: BaseException, what: str = "") -> None:
        """Record that ``job`` failed (with ``debug``: raise the error instead)."""
        if self.debug:
            raise exc
        message = f"{what}{describe(exc)}"
        if not message.startswith(str(job.path)):
            message = f"{job.path}: {message}"
        self.failures.append((str(job.path), message))

    def load(self, job: ImageJob) -> tuple[ImageJob, Any, Any] | None:
        from conformer_xai.data import load_image

        t = time.perf_counter()
        kind = input_kind(job.path, self.array_as_image)
        try:
            if kind == "audio":
                from conformer_xai.audio import load_audio

                x, image, job.meta = load_audio(job.path, self.net, self.audio_config,
                                                with_meta=True)
            elif kind == "array":
                x, image = load_image(job.path, self.net)
            else:
                x, image = load_image(job.path, self.net, input_size=self.input_size,
                                      crop=self.crop, as_image=self.array_as_image)
        except Exception as exc:  # any unreadable input is that file's failure, not the run's
            self.fail(job, exc)
            return None
        job.timings["load_s"] = time.perf_counter() - t
        return job, x, image

    def explain(self, explainer: Any, group: list[tuple[ImageJob, Any, Any]],
                options: dict[str, Any]) -> list[tuple[ImageJob, Any]]:
        """Explain one group of same-shape inputs, their display images passed along once."""
        import numpy as np
        import torch

        x = torch.cat([item[1] for item in group]).to(self.device)
        t = time.perf_counter()
        from conformer_xai.explain.caveats import SignedTapWarning

        try:
            with warnings.catch_warnings():  # printed once as a note: line (run_caveat)
                warnings.simplefilter("ignore", SignedTapWarning)
                exp = explainer.explain(x, image=np.stack([np.asarray(item[2], dtype=np.float32)
                                                           for item in group]), **options)
        except ValueError as exc:
            if self.debug:
                raise
            raise CliUsageError(describe(exc)) from exc
        per_image = (time.perf_counter() - t) / len(group)
        out = []
        for i, (job, _, _) in enumerate(group):
            job.timings["explain_s"] = per_image
            one = exp.select(i)
            kind = input_kind(job.path, self.array_as_image)
            one.meta.update({"weights_source": self.source, "input_kind": kind,
                             "input": str(job.path), "notes": self.image_notes(one.meta, kind),
                             "size_mismatch": getattr(self.net, "size_mismatch", None),
                             **job.meta})
            out.append((job, one))
        return out

    def image_notes(self, meta: dict[str, Any], kind: str) -> list[str]:
        """The notes that concern one image: the explanation's warnings (random weights); an
        embedded model on a photo."""
        from conformer_xai.explain.caveats import warning_messages

        notes = warning_messages(meta)
        if self.source == "embedded" and kind == "photo":
            notes.append(EMBEDDED_ON_PHOTO.format(model=self.model))
        return notes

    def write(self, job: ImageJob, exp: Any) -> bool:
        """Write the figure, the arrays (when asked) and the JSON summary of one image."""
        from conformer_xai.plot import explanation_figure, spectrogram_figure
        from conformer_xai.plot.figures import figure_cam_method

        try:
            t = time.perf_counter()
            job.figure.parent.mkdir(parents=True, exist_ok=True)
            cam = figure_cam_method(exp)
            spectro = exp.meta["input_kind"] in SPECTRO_KINDS and bool(cam and exp.blocks(cam,
                                                                                         "cnn"))
            draw = spectrogram_figure if spectro else explanation_figure
            draw(exp).savefig(job.figure, format=self.fmt, dpi=150 if not spectro else 110)
            job.timings["figure_s"] = time.perf_counter() - t
            t = time.perf_counter()
            if job.arrays is not None:
                exp.save(job.arrays, overwrite=self.force)
            summary = self.summary(job, exp)
            job.timings["write_s"] = time.perf_counter() - t
            summary["timings_s"] = {k: round(v, 4) for k, v in job.timings.items()}
            write_json(job.summary, summary)
        except OSError as exc:
            self.fail(job, exc, "cannot write outputs: ")
            return False
        self.summaries.append(summary)
        return True

    def summary(self, job: ImageJob, exp: Any) -> dict[str, Any]:
        target = int(exp.target[0])
        return {
            "input": str(job.path), "model": self.model, "weights": self.source,
            "input_kind": exp.meta["input_kind"], "device": self.device,
            "input_size": list(exp.input_size), "heads": list(exp.heads),
            "tap": exp.meta.get("tap"), "reduce": exp.meta.get("reduce"),
            "methods": exp.methods, "maps": exp.keys(),
            **({"method_options": exp.meta["method_options"]}
               if exp.meta.get("method_options") else {}),
            "target": {"index": target, "name": exp.class_name(target)},
            "predictions": exp.predictions(), "notes": exp.meta["notes"],
            "size_mismatch": exp.meta.get("size_mismatch"),
            **({"audio": exp.meta["audio"], "fold": exp.meta["fold"]}
               if "audio" in exp.meta else {}),
            **relevance_summary(exp),
            "files": {"figure": str(job.figure), "summary": str(job.summary),
                      "arrays": None if job.arrays is None else str(job.arrays)},
        }


def _same_shape_groups(loaded: list[tuple[ImageJob, Any, Any]]
                       ) -> list[list[tuple[ImageJob, Any, Any]]]:
    """Images of one batch grouped by tensor and display shape (sizes differ only with
    --no-crop; inputs of different kinds may share a tensor shape)."""
    import numpy as np

    groups: dict[tuple[tuple[int, ...], tuple[int, ...]], list[tuple[ImageJob, Any, Any]]] = {}
    for item in loaded:
        groups.setdefault((tuple(item[1].shape[1:]), np.shape(item[2])), []).append(item)
    return list(groups.values())


def relevance_summary(exp: Any) -> dict[str, Any]:
    """The JSON fields of the LRP variants (one image): conservation, branch shares, flows."""
    out: dict[str, Any] = {}
    for key, cons in exp.meta.items():  # <variant>_conservation of each LRP variant run
        if key.endswith("_conservation") and cons:
            out[key.removesuffix("_conservation")] = {h: {k: v[0] for k, v in c.items()}
                                                      for h, c in cons.items()}
    if exp.flows:
        out["branch_share"] = {h: v[0] for h, v in exp.meta.get("branch_share", {}).items()}
        out["flows"] = {h: [{k: v if k == "block" else v[0] for k, v in row.items()}
                            for row in rows] for h, rows in exp.flows.items()}
    return out


def _human_line(job: ImageJob, exp: Any) -> str:
    tops = [f"{head}: {top[0]['name']} {top[0]['prob']:.2f}"
            for head, top in exp.predictions(k=1).items()]
    line = f"{job.path} -> {job.figure}  ({'; '.join(tops)})"
    shares = exp.meta.get("branch_share") if exp.flows else None
    if shares:
        parts = [f"{h} head {s[0]['cnn']:.0%} CNN / {s[0]['transformer']:.0%} patch embedding"
                 for h, s in shares.items()]
        line += "\n  LRP relevance reaching the stem through each branch's input path: " + \
            "; ".join(parts)
    return line
