"""Time-frequency axes of the report's viewer for spectrogram (audio) inputs.

A spectrogram Conformer sees the log-mel spectrogram folded into an image the fork's way
(``shared/reference/fork_spectrograms.md``, step 5): with ``freq_ratio`` r, image row
``k * n_mels + f`` and column ``t`` hold frame ``k * T / r + t`` of mel band ``f`` (low bands
first). The viewer unfolds the picture and every map back to (band, frame), low frequencies at
the bottom, and labels time in seconds and frequency in Hz (Slaney mel scale, as the front end).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["front_end", "axes", "hz_to_mel"]

#: The fork's front end (the defaults when the recorded config leaves a value out).
FORK = {"sr": 32000, "hop_length": 160, "n_mels": 112, "fmin": 50.0, "fmax": 14000.0,
        "freq_ratio": 2}
_HZ_TICKS = (50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)


def front_end(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The audio front-end config recorded in an explanation's metadata: the first dict
    (at the top level or one level down) holding both ``sr`` and ``hop_length``."""
    candidates = [meta, *(v for v in meta.values() if isinstance(v, Mapping))]
    for c in candidates:
        if isinstance(c.get("sr"), (int, float)) and isinstance(c.get("hop_length"),
                                                                 (int, float)):
            return {**FORK, **{k: v for k, v in c.items() if v is not None}}
    return None


def hz_to_mel(hz: float) -> float:
    """Slaney's mel scale (librosa's default, ``htk=False``): linear to 1 kHz, log above."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    if hz < min_log_hz:
        return hz / f_sp
    return min_log_hz / f_sp + math.log(hz / min_log_hz) / (math.log(6.4) / 27.0)


def axes(meta: Mapping[str, Any], height: int, width: int) -> dict[str, Any] | None:
    """The unfolding and the tick labels of a spectrogram input shown at ``height`` x ``width``
    (the folded image), or None when the metadata records no audio front end.

    Returns ``{"fold", "width", "height", "x_ticks", "y_ticks", "seconds"}``: the unfolded
    size (``fold * width`` x ``height / fold``; fold 1 when the height does not split) and the
    ticks as ``(percent, label)``, x from the left, y from the bottom.
    """
    config = front_end(meta)
    if config is None:
        return None
    fold = int(config.get("freq_ratio") or 1)
    if fold < 1 or height % fold:
        fold = 1
    frames = int(config.get("frames") or fold * width)
    seconds = frames * float(config["hop_length"]) / float(config["sr"])
    step = _nice_step(seconds / 6)
    x_ticks = [(round(100 * t / seconds, 3), f"{t:g} s")
               for t in (k * step for k in range(int(seconds / step) + 1)) if seconds > 0]
    lo, hi = float(config["fmin"]), float(config["fmax"])
    m_lo, m_hi = hz_to_mel(lo), hz_to_mel(hi)
    y_ticks = [(round(100 * (hz_to_mel(f) - m_lo) / (m_hi - m_lo), 3),
                f"{f / 1000:g} kHz" if f >= 1000 else f"{f} Hz")
               for f in _HZ_TICKS if lo <= f <= hi] if m_hi > m_lo else []
    return {"fold": fold, "width": fold * width, "height": height // fold,
            "x_ticks": x_ticks, "y_ticks": y_ticks, "seconds": seconds}


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    base = 10 ** math.floor(math.log10(raw))
    return next(m * base for m in (1, 2, 5, 10) if m * base >= raw)
