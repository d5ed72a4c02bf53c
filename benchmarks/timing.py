"""Timing and memory measurement shared by the benchmarks, and the machine description."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Timing", "synchronize", "time_once", "summarise", "peak_memory", "machine_info",
           "pin_glibc_malloc"]


@dataclass
class Timing:
    """Seconds per call of one case over its repeats."""

    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")

    @property
    def minimum(self) -> float:
        return min(self.times) if self.times else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {"median_s": self.median, "min_s": self.minimum, "repeats": len(self.times),
                "times_s": self.times}


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall-clock seconds of one call, the device synchronised before and after."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def summarise(timings: dict[str, Timing]) -> dict[str, dict[str, Any]]:
    return {name: t.as_dict() for name, t in timings.items()}


_GLIBC_PINNED = False


def pin_glibc_malloc(threshold: int = 128 * 1024) -> bool:
    """Make RSS track live CPU tensors: glibc serves blocks >= ``threshold`` bytes with mmap.

    By default glibc raises its mmap threshold after the first large free, so freed tensors stay
    in the heap and RSS no longer falls; pinning the threshold returns them to the system.
    Returns False where glibc is not the allocator.
    """
    global _GLIBC_PINNED
    if _GLIBC_PINNED:
        return True
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_mmap_threshold = -3
        _GLIBC_PINNED = bool(libc.mallopt(m_mmap_threshold, threshold))
    except (OSError, AttributeError):
        return False
    return _GLIBC_PINNED


def _trim() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextlib.contextmanager
def _rss_sampler(interval: float = 0.0005) -> Iterator[dict[str, int]]:
    import psutil

    proc = psutil.Process()
    out = {"base": proc.memory_info().rss, "peak": 0}
    out["peak"] = out["base"]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            out["peak"] = max(out["peak"], proc.memory_info().rss)
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out["peak"] = max(out["peak"], proc.memory_info().rss)


def peak_memory(fn: Callable[[], Any], device: torch.device) -> dict[str, Any]:
    """Peak memory one call adds above what is resident before it (model, inputs).

    CUDA: ``torch.cuda.max_memory_allocated`` (exact, tensors only). CPU: the process's RSS
    sampled every 0.5 ms by a thread, with glibc's mmap threshold pinned (see
    :func:`pin_glibc_malloc`); approximate (sampling can miss short peaks), and "n/a" without
    psutil or glibc.
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {"peak_mib": (peak - base) / 2**20, "method": "torch.cuda.max_memory_allocated"}
    try:
        import psutil  # noqa: F401
    except ImportError:
        return {"peak_mib": None, "method": "n/a (psutil missing)"}
    if not pin_glibc_malloc():
        return {"peak_mib": None, "method": "n/a (not glibc)"}
    _trim()
    with _rss_sampler() as rss:
        fn()
    return {"peak_mib": (rss["peak"] - rss["base"]) / 2**20, "method": "sampled RSS delta"}


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU model, cores, threads, Python/torch versions, GPU name (when on CUDA)."""
    import importlib.metadata as md

    def version(dist: str) -> str | None:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    info: dict[str, Any] = {
        "cpu": _cpu_model(), "logical_cores": os.cpu_count(),
        "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else None,
        "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__,
        "timm": version("timm"), "grad-cam": version("grad-cam"), "captum": version("captum"),
        "device": str(device), "gpu": None,
    }
    with contextlib.suppress(ImportError, OSError):
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
        info["load_average"] = list(os.getloadavg())
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return info
