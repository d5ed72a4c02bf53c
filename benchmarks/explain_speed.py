"""Explanation speed and memory, side by side in one run (issue 3's ratios, issue 7's table).

Cases, each timed on the same input batch, interleaved repeat by repeat so that load changes on a
shared machine hit every case alike (the median of the repeats is reported):

* ``forward``: one plain forward (no autograd), the model's default (fused) attention.
* ``fwd_bwd``: the limit: forward with frozen parameters, then ``torch.autograd.grad`` of the
  target score (top-1 of the fused head) with respect to the input.
* ``ours_full``: :meth:`Explainer.explain` with the full set of issue 3 (features, Grad-CAM on all
  24 taps, rollout, gradient rollout; the fused head): one forward, one ``autograd.grad``.
* ``rollout_pass``: a separate rollout-only explanation (one forward, no gradients).
* ``pgc_cnn`` / ``pgc_transformer``: pytorch-grad-cam's ``GradCAM``, one call per branch with
  that branch's 12 taps as ``target_layers`` (pytorch-grad-cam averages them into one map).
* ``pgc_per_tap`` (``--pgc-per-tap``): 24 ``GradCAM`` calls, one per tap, which is what it takes
  to get 24 separate maps from pytorch-grad-cam.
* ``captum_lgc``: captum's ``LayerGradCam`` on one tap (the last block of the first branch: CNN
  block 12 on a Conformer), upsampled to the input.
* ``lrp``: :meth:`Explainer.explain` with ``methods=("lrp",)`` (the fused head): only the LRP
  pass (a forward with the rules swapped in, whose logits give the target, and one modified
  backward; no main pass since only own-pass methods are asked for), with relevance at the
  input, at all taps and, on a Conformer, the branch-flow table, plus the explainer's
  bookkeeping (cropping, upsampling, normalising the maps). Always fp32 (the LRP pass does not
  autocast).
* ``lrp_pass``: the LRP pass alone (``conformer_xai.explain.lrp.run_lrp``, same outputs, no
  maps upsampled).

Derived: ``pgc_set`` = pgc_cnn + pgc_transformer + rollout_pass (issue 3's comparison), and the
ratios ours_full / fwd_bwd (goal <= 1.15), pgc_set / ours_full (goal >= 2.5), the peak
memory of ours_full / fwd_bwd (issue 7's goal <= 1.3), and lrp / fwd_bwd and lrp_pass / fwd_bwd
(issue 16's goal <= 1.5 per head).

Run ``python -m benchmarks --help`` for the options.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch loads after the arguments are checked
    import torch
    from torch import nn

    from .timing import Timing

__all__ = ["BenchConfig", "run_benchmark", "format_table", "main", "FULL_SET"]

#: The full set of issue 3 (one head).
FULL_SET = ("features", "gradcam", "rollout", "grad_rollout")
GOALS = {"ours_over_fwd_bwd": 1.15, "pgc_set_over_ours": 2.5, "memory_ours_over_fwd_bwd": 1.3,
         "lrp_over_fwd_bwd": 1.5, "lrp_pass_over_fwd_bwd": 1.5}
CASE_ORDER = ("forward", "fwd_bwd", "ours_full", "rollout_pass", "pgc_cnn", "pgc_transformer",
              "pgc_per_tap", "captum_lgc", "lrp", "lrp_pass")
DEFAULT_CASES = tuple(c for c in CASE_ORDER if c != "pgc_per_tap")
DEFAULT_BATCHES = {"cpu": (1, 8), "cuda": (1, 64)}
QUICK_BATCHES = {"cpu": (1,), "cuda": (1, 8)}


@dataclass
class BenchConfig:
    """Settings of one benchmark run (all recorded in the JSON)."""

    model: str = "conformer_small_patch16"
    device: str = "cpu"
    batches: tuple[int, ...] = (1, 8)
    input_size: tuple[int, int] = (224, 224)
    dtype: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    warmup: int = 1
    repeats: int = 5
    threads: int | None = None
    cases: tuple[str, ...] = DEFAULT_CASES
    memory: bool = True
    seed: int = 0


# ---------------------------------------------------------------------- cases
@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def build_cases(model: nn.Module, x: torch.Tensor, cfg: BenchConfig
                ) -> tuple[dict[str, Callable[[], Any]], dict[str, str], dict[str, str]]:
    """The case functions on batch ``x``, the precision each runs in, and the cases skipped
    (with the reason: not asked for, a library missing, a single-branch model)."""
    import torch

    from conformer_xai.explain import Explainer
    from conformer_xai.explain.interop import pytorch_grad_cam_setup

    amp_dtype = torch.bfloat16 if cfg.dtype == "bf16" else None

    def amp() -> contextlib.AbstractContextManager:
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(x.device.type, dtype=amp_dtype)

    explainer = Explainer(model)
    adapter = explainer.adapter
    head = explainer.default_head
    size = tuple(x.shape[-2:])
    with torch.no_grad(), amp():
        targets = adapter.forward_heads(x)[head].argmax(dim=1)

    def forward() -> Any:
        with torch.no_grad(), amp():
            return model(x)

    def fwd_bwd() -> Any:
        with _frozen(model):
            xi = x.detach().requires_grad_(True)
            with amp():
                logits = adapter.forward_heads(xi)[head]
            score = logits.float().gather(1, logits.argmax(dim=1, keepdim=True)).sum()
            return torch.autograd.grad(score, xi)

    def ours_full() -> Any:
        return explainer.explain(x, head=head, methods=FULL_SET, autocast_dtype=amp_dtype)

    def rollout_pass() -> Any:
        return explainer.explain(x, methods=("rollout",), autocast_dtype=amp_dtype)

    branch_setup = {}
    for branch in explainer.branches:
        cam_model, _, reshape = pytorch_grad_cam_setup(adapter, branch, 1, head)
        layers = [adapter.tap(branch, k).grad_module
                  for k in range(1, explainer.num_blocks(branch) + 1)]
        branch_setup[branch] = (cam_model, layers, reshape)

    def pgc(branch: str) -> Callable[[], Any]:
        from pytorch_grad_cam import GradCAM

        cam_model, layers, reshape = branch_setup[branch]

        def run() -> Any:
            with GradCAM(model=cam_model, target_layers=layers, reshape_transform=reshape) as cam:
                return cam(input_tensor=x, targets=None)

        return run

    def pgc_per_tap() -> Any:
        from pytorch_grad_cam import GradCAM

        out = []
        for cam_model, layers, reshape in branch_setup.values():
            for layer in layers:
                with GradCAM(model=cam_model, target_layers=[layer],
                             reshape_transform=reshape) as cam:
                    out.append(cam(input_tensor=x, targets=None))
        return out

    def captum_lgc() -> Any:
        from captum.attr import LayerAttribution, LayerGradCam

        branch = explainer.branches[0]
        with explainer.nchw_tap(branch, explainer.num_blocks(branch)) as layer, amp():
            attr = LayerGradCam(explainer.head_fn(head), layer).attribute(x, target=targets)
        return LayerAttribution.interpolate(attr.float(), size, "bilinear")

    def lrp() -> Any:
        return explainer.explain(x, head=head, methods=("lrp",))

    def lrp_pass() -> Any:
        from conformer_xai.explain.lrp import run_lrp

        blocks = {b: list(range(1, explainer.num_blocks(b) + 1)) for b in explainer.branches}
        with explainer._model_state(explicit_attention=False):
            return run_lrp(adapter, x, targets, [head], "lrp", blocks, explainer._grid_fn(*size))

    available: dict[str, Callable[[], Any]] = {
        "forward": forward, "fwd_bwd": fwd_bwd, "ours_full": ours_full,
        "rollout_pass": rollout_pass, "pgc_cnn": pgc("cnn") if "cnn" in branch_setup else None,
        "pgc_transformer": pgc("transformer") if "transformer" in branch_setup else None,
        "pgc_per_tap": pgc_per_tap, "captum_lgc": captum_lgc, "lrp": lrp,
        "lrp_pass": lrp_pass}
    missing = {lib: reason for lib in ("pytorch_grad_cam", "captum")
               if (reason := _missing(lib)) is not None}
    cases: dict[str, Callable[[], Any]] = {}
    skipped: dict[str, str] = {}
    for name in CASE_ORDER:
        lib = "captum" if name.startswith("captum") else (
            "pytorch_grad_cam" if name.startswith("pgc") else None)
        if name not in cfg.cases:
            skipped[name] = "not asked for"
        elif available[name] is None:
            skipped[name] = f"the model has no {name.split('_')[1]} branch"
        elif lib in missing:
            skipped[name] = missing[lib]
        else:
            cases[name] = available[name]
    precision = "bf16 autocast" if amp_dtype is not None else "fp32"
    precisions = {name: precision for name in cases}
    for name in ("pgc_cnn", "pgc_transformer", "pgc_per_tap", "lrp", "lrp_pass"):
        if name in precisions:  # numpy post-processing (pgc) / the LRP pass: no bfloat16
            precisions[name] = "fp32"
    return cases, precisions, skipped


def _missing(module: str) -> str | None:
    """None when ``module`` imports, else why not."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as err:
        return f"{module} not installed ({err})"
    return None


# ---------------------------------------------------------------------- running
def _make_model(cfg: BenchConfig) -> nn.Module:
    import timm
    import torch

    import conformer_xai  # noqa: F401  (registers our models with timm)
    from conformer_xai.batch import prepare_model

    torch.manual_seed(cfg.seed)
    try:
        model = timm.create_model(cfg.model, pretrained=False)
    except RuntimeError as err:  # timm: "Unknown model (...)"
        raise ValueError(f"unknown model {cfg.model!r}: {err}") from err
    return prepare_model(model, cfg.device, channels_last=cfg.channels_last, compile=cfg.compile)


def run_benchmark(cfg: BenchConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every case for every batch size; returns the JSON-ready result."""
    import torch

    from .timing import Timing, machine_info, peak_memory, time_once

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = _make_model(cfg)
    in_chans = int(getattr(model, "in_chans", 3))
    result: dict[str, Any] = {
        "benchmark": "explain_speed", "format": 1,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": asdict(cfg), "machine": machine_info(device), "notes": _notes(cfg),
        "runs": []}
    if device.type == "cuda":
        result["machine"].update(
            cudnn_benchmark=True, matmul_tf32=torch.backends.cuda.matmul.allow_tf32,
            cudnn_tf32=torch.backends.cudnn.allow_tf32)
    for batch in cfg.batches:
        gen = torch.Generator().manual_seed(cfg.seed)
        x = torch.randn(batch, in_chans, *cfg.input_size, generator=gen).to(device)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        cases, precisions, skipped = build_cases(model, x, cfg)
        timings = {name: Timing() for name in cases}
        errors: dict[str, str] = {}
        log(f"batch {batch}: warm-up ({cfg.warmup} per case) ...")
        for name, fn in cases.items():
            try:
                for _ in range(cfg.warmup):
                    time_once(fn, device)
            except (RuntimeError, ValueError) as err:  # e.g. CUDA out of memory
                errors[name] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        live = {n: f for n, f in cases.items() if n not in errors}
        for r in range(cfg.repeats):
            for name, fn in live.items():
                timings[name].times.append(time_once(fn, device))
            log(f"batch {batch}: repeat {r + 1}/{cfg.repeats} "
                + " ".join(f"{n}={timings[n].times[-1] * 1e3:.0f}ms" for n in live))
        memory = {}
        if cfg.memory:
            for name, fn in live.items():
                if name != "pgc_per_tap":
                    memory[name] = peak_memory(fn, device)
        run = _batch_result(batch, cases, timings, memory, precisions, errors)
        run["skipped"] = {n: why for n, why in skipped.items() if why != "not asked for"}
        result["runs"].append(run)
        del cases, x
    return result


def _batch_result(batch: int, cases: dict, timings: dict[str, Timing], memory: dict,
                  precisions: dict[str, str], errors: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"batch": batch, "cases": {}}
    for name in cases:
        t = timings[name]
        entry: dict[str, Any] = {"precision": precisions[name]}
        if name in errors:
            entry["error"] = errors[name]
        else:
            entry.update(t.as_dict())
            entry["images_per_s"] = batch / t.median
        if name in memory:
            entry["peak_mib"] = memory[name]["peak_mib"]
            entry["memory_method"] = memory[name]["method"]
        out["cases"][name] = entry
    med = {n: c["median_s"] for n, c in out["cases"].items() if "median_s" in c}
    ratios: dict[str, float | None] = {}
    if {"ours_full", "fwd_bwd"} <= med.keys():
        ratios["ours_over_fwd_bwd"] = med["ours_full"] / med["fwd_bwd"]
    if {"ours_full", "forward"} <= med.keys():
        ratios["ours_over_forward"] = med["ours_full"] / med["forward"]
    if {"fwd_bwd", "forward"} <= med.keys():
        ratios["fwd_bwd_over_forward"] = med["fwd_bwd"] / med["forward"]
    if {"pgc_cnn", "pgc_transformer", "rollout_pass", "ours_full"} <= med.keys():
        pgc_set = med["pgc_cnn"] + med["pgc_transformer"] + med["rollout_pass"]
        out["pgc_set_s"] = pgc_set
        ratios["pgc_set_over_ours"] = pgc_set / med["ours_full"]
        ratios["pgc_set_over_fwd_bwd"] = pgc_set / med["fwd_bwd"]
    if {"pgc_per_tap", "rollout_pass", "ours_full"} <= med.keys():
        ratios["pgc_per_tap_over_ours"] = (med["pgc_per_tap"] + med["rollout_pass"]
                                           ) / med["ours_full"]
    if {"lrp", "fwd_bwd"} <= med.keys():
        ratios["lrp_over_fwd_bwd"] = med["lrp"] / med["fwd_bwd"]
    if {"lrp_pass", "fwd_bwd"} <= med.keys():
        ratios["lrp_pass_over_fwd_bwd"] = med["lrp_pass"] / med["fwd_bwd"]
    if {"captum_lgc", "ours_full"} <= med.keys():
        ratios["captum_one_tap_over_ours"] = med["captum_lgc"] / med["ours_full"]
    mem = {n: c.get("peak_mib") for n, c in out["cases"].items()}
    if mem.get("ours_full") is not None and mem.get("fwd_bwd"):
        ratios["memory_ours_over_fwd_bwd"] = mem["ours_full"] / mem["fwd_bwd"]
    out["ratios"] = ratios
    out["goals"] = {k: {"goal": g, "value": ratios.get(k),
                        "met": None if ratios.get(k) is None else
                        (ratios[k] >= g if k == "pgc_set_over_ours" else ratios[k] <= g)}
                    for k, g in GOALS.items()}
    return out


def _notes(cfg: BenchConfig) -> list[str]:
    notes = [
        "random weights (timing does not depend on the weights)",
        "median of interleaved repeats after warm-up; device synchronised around each call",
        "pgc_cnn / pgc_transformer: one GradCAM call per branch with its 12 taps as "
        "target_layers; pgc_set = pgc_cnn + pgc_transformer + rollout_pass",
        "fwd_bwd, forward and ours_full all use the model's fused attention (ours recomputes "
        "the attention probabilities for rollout from each block's qkv)",
        "peak memory: what a call adds above the resident model and input",
    ]
    if cfg.dtype == "bf16":
        notes.append("bf16: forward, fwd_bwd, ours, rollout and captum under torch.autocast; "
                     "pytorch-grad-cam runs in fp32 (its numpy post-processing has no bfloat16)")
    if cfg.device == "cpu":
        notes.append("CPU peak memory is a sampled RSS delta (approximate)")
    return notes


# ---------------------------------------------------------------------- reporting
_LABELS = {
    "forward": "forward (plain)", "fwd_bwd": "forward + backward to input (limit)",
    "ours_full": "conformer-xai full set (1 head)", "rollout_pass": "rollout pass",
    "pgc_cnn": "pytorch-grad-cam GradCAM, 12 CNN taps (1 call)",
    "pgc_transformer": "pytorch-grad-cam GradCAM, 12 transformer taps (1 call)",
    "pgc_per_tap": "pytorch-grad-cam GradCAM, 24 calls (1 per tap)",
    "captum_lgc": "captum LayerGradCam, 1 tap (last block)",
    "lrp": "conformer-xai lrp (1 head; its own pass only, no main pass)",
    "lrp_pass": "LRP pass alone (1 head)",
}


def format_table(result: dict[str, Any]) -> str:
    """A markdown table per batch size, with the ratios and goals."""
    m = result["machine"]
    cfg = result["config"]
    where = m["gpu"] or f"{m['cpu']} ({m['torch_threads']} threads)"
    lines = [f"{cfg['model']} at {cfg['input_size'][0]}x{cfg['input_size'][1]}, {cfg['dtype']}"
             f"{', channels-last' if cfg['channels_last'] else ''}"
             f"{', compiled' if cfg['compile'] else ''}; {cfg['device']}: {where}; "
             f"torch {m['torch']}"]
    for run in result["runs"]:
        b = run["batch"]
        fb = run["cases"].get("fwd_bwd", {}).get("median_s")
        lines += ["", f"batch {b}", "",
                  "| case | ms / call | img/s | x fwd+bwd | peak MiB |",
                  "|---|---:|---:|---:|---:|"]
        for name, c in run["cases"].items():
            label = _LABELS.get(name, name)
            if c.get("precision") == "fp32" and cfg["dtype"] == "bf16":
                label += " [fp32]"
            if "error" in c:
                lines.append(f"| {label} | failed: {c['error'][:60]} | | | |")
                continue
            rel = f"{c['median_s'] / fb:.2f}" if fb else "-"
            peak = c.get("peak_mib")
            lines.append(f"| {label} | {c['median_s'] * 1e3:.1f} | {c['images_per_s']:.2f} | "
                         f"{rel} | {'n/a' if peak is None else f'{peak:.0f}'} |")
        if "pgc_set_s" in run:
            rel = f"{run['pgc_set_s'] / fb:.2f}" if fb else "-"
            lines.append(f"| pytorch-grad-cam set (CNN + transformer + rollout pass) | "
                         f"{run['pgc_set_s'] * 1e3:.1f} | {b / run['pgc_set_s']:.2f} | {rel} | |")
        for name, why in run.get("skipped", {}).items():
            lines.append(f"| {_LABELS.get(name, name)} | skipped: {why[:60]} | | | |")
        lines.append("")
        for key, g in run["goals"].items():
            if g["value"] is None:
                continue
            cmp = ">=" if key == "pgc_set_over_ours" else "<="
            lines.append(f"- {key} = {g['value']:.2f} (goal {cmp} {g['goal']}: "
                         f"{'met' if g['met'] else 'MISSED'})")
        for key in ("ours_over_forward", "fwd_bwd_over_forward", "pgc_per_tap_over_ours",
                    "captum_one_tap_over_ours"):
            if key in run["ratios"]:
                lines.append(f"- {key} = {run['ratios'][key]:.2f}")
    return "\n".join(lines)


def _parse_batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--batch takes comma-separated sizes >= 1, got {text!r}")
    return values


def _parse_cases(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    unknown = [n for n in names if n not in CASE_ORDER]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown case {unknown[0] if unknown else text!r}; "
                                         f"accepted: {', '.join(CASE_ORDER)}")
    return names


def _parse_size(text: str) -> tuple[int, int]:
    from conformer_xai.sizes import parse_hw

    try:
        size = parse_hw(text)
    except ValueError:
        size = (0, 0)
    if min(size) < 32:
        raise argparse.ArgumentTypeError(f"--input-size takes N or HxW (>= 32), got {text!r}")
    return size


def parse_args(argv: Sequence[str] | None = None) -> tuple[BenchConfig, Path]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="conformer-xai explanation speed: our full set vs the forward+backward "
                    "limit, pytorch-grad-cam and captum, side by side.")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats and batch sizes (CPU: batch 1; CUDA: 1,8)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--model", default="conformer_small_patch16",
                        help="a registered Conformer (default conformer_small_patch16)")
    parser.add_argument("--batch", type=_parse_batches, default=None,
                        help="comma-separated batch sizes (default CPU 1,8; CUDA 1,64)")
    parser.add_argument("--input-size", type=_parse_size, default=(224, 224),
                        help="N or HxW (default 224)")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                        help="bf16 = torch.autocast for forward and backward")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model's hook-free submodules")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--cases", type=_parse_cases, default=DEFAULT_CASES,
                        help=f"comma-separated subset of {','.join(CASE_ORDER)} "
                             f"(default: all but pgc_per_tap)")
    parser.add_argument("--pgc-per-tap", action="store_true",
                        help="also time 24 single-tap pytorch-grad-cam calls (slow)")
    parser.add_argument("--no-memory", action="store_true", help="skip peak memory")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                        help="folder for the JSON result (default benchmarks/results/)")
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available on this machine")
    if args.dtype == "bf16" and args.device == "cpu":
        print("note: bf16 autocast on CPU is supported but usually slower than fp32",
              file=sys.stderr)
    batches = args.batch or (QUICK_BATCHES if args.quick else DEFAULT_BATCHES)[args.device]
    warmup = args.warmup if args.warmup is not None else (
        1 if args.quick or args.device == "cpu" else 3)
    repeats = args.repeats if args.repeats is not None else (
        3 if args.quick else (5 if args.device == "cpu" else 10))
    if warmup < 0 or repeats < 1:
        parser.error("--warmup must be >= 0 and --repeats >= 1")
    cfg = BenchConfig(model=args.model, device=args.device, batches=batches,
                      input_size=args.input_size, dtype=args.dtype,
                      channels_last=args.channels_last, compile=args.compile, warmup=warmup,
                      repeats=repeats, threads=args.threads,
                      cases=tuple(args.cases) + (("pgc_per_tap",) if args.pgc_per_tap else ()),
                      memory=not args.no_memory)
    return cfg, args.out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks``; prints the table and writes the JSON."""
    cfg, out_dir = parse_args(argv)
    try:
        result = run_benchmark(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
    except ValueError as err:
        print(f"python -m benchmarks: error: {err}", file=sys.stderr)
        return 2
    print(format_table(result))
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    variant = "".join(f"_{flag}" for flag, on in (("cl", cfg.channels_last),
                                                  ("compile", cfg.compile)) if on)
    path = out_dir / f"explain_speed_{cfg.device}_{cfg.dtype}{variant}_{stamp}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {path}")
    return 0
