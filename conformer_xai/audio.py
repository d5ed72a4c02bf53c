"""Audio in: wav/flac/ogg files to the log-mel images the spectrogram fork of Conformer trains on.

The default front end is the fork's (see ``docs`` and the README's spectrogram section):

1. power spectrogram: STFT with ``n_fft`` 512, hop 160, window 512 (periodic Hann), centred
   with reflect padding, ``|STFT|^2`` -> ``(T, 257)`` with ``T = 1 + samples // 160``;
2. mel: librosa's Slaney filter bank (Slaney scale and area norm), 112 bands, 50-14000 Hz
   (bands above the Nyquist frequency are empty: -100 dB, as in the fork);
3. dB: ``10 * log10(max(x, 1e-10)) - 10 * log10(max(1e-10, ref))`` (ref 1, no ``top_db``);
4. only when ``frames`` is set: pad with the floor (-100 dB) or crop to ``frames`` frames;
5. fold with ``freq_ratio`` 2: an odd frame count is first resized to ``T + 1`` frames (bicubic,
   ``align_corners=True``); image row ``r * n_mels + f``, column ``t`` holds frame
   ``r * T' / 2 + t``, band ``f``: ``(2 * n_mels, T' / 2)``, 448 frames give 224 x 224.

Every setting can change through a config whose keys are torchlibrosa's parameter names plus
``freq_ratio`` and ``frames`` (:data:`DEFAULT_AUDIO_CONFIG`). Clips are read with soundfile
(``pip install conformer-xai[audio]``), mixed down to mono (with an :class:`AudioWarning`), and
resampled with soxr when their rate differs from ``sr``. Clips shorter than
``32 * freq_ratio`` frames (64: 0.63 s at 16 kHz) are refused, and so are clips longer than
:data:`MAX_FRAMES` frames (16384: 163.8 s) unless ``frames`` crops them.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .channels import model_in_chans
from .errors import Setting, SettingError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["AUDIO_EXTENSIONS", "DEFAULT_AUDIO_CONFIG", "MAX_FRAMES", "MIN_WIDTH", "AudioWarning",
           "load_audio", "read_audio", "resolve_audio_config", "log_mel", "mel_filterbank",
           "mel_frequencies", "fold", "unfold", "fold_meta", "INSTALL_HINT"]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
#: The fork's front end; keys are torchlibrosa's parameter names plus ``freq_ratio``, ``frames``.
DEFAULT_AUDIO_CONFIG: dict[str, Any] = {
    "sr": 16000, "n_fft": 512, "hop_length": 160, "win_length": 512, "window": "hann",
    "center": True, "pad_mode": "reflect", "n_mels": 112, "fmin": 50.0, "fmax": 14000.0,
    "ref": 1.0, "amin": 1e-10, "top_db": None, "freq_ratio": 2, "frames": None,
}
#: Frames beyond which a clip is refused unless ``frames`` crops it (a width of 8192 pixels at
#: ``freq_ratio`` 2; 163.8 s at hop 160 and 16 kHz).
MAX_FRAMES = 16384
#: The narrowest model input the Conformer takes (pixels).
MIN_WIDTH = 32
WINDOWS = ("hann", "hamming", "blackman", "bartlett")
PAD_MODES = ("reflect", "constant", "replicate", "circular")
INSTALL_HINT = "pip install 'conformer-xai[audio]' (soundfile and soxr)"


class AudioWarning(UserWarning):
    """An audio input was adapted (stereo mixed down, resampled); the CLI prints it as a note."""


# --------------------------------------------------------------------------- config
def resolve_audio_config(config: dict | str | os.PathLike | None = None) -> dict[str, Any]:
    """The front end's settings: :data:`DEFAULT_AUDIO_CONFIG` updated by ``config``.

    Args:
        config: A dict, or the path of a JSON file holding one object, with any of the keys of
            :data:`DEFAULT_AUDIO_CONFIG`.

    Raises:
        FileNotFoundError: The JSON file does not exist.
        ValueError: Not JSON, unknown keys, or a value out of range (the message names it).
    """
    given: dict[str, Any] = {}
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such audio config file")
        try:
            given = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: audio config is not valid JSON ({exc})") from None
        if not isinstance(given, dict):
            raise ValueError(f"{path}: audio config must be a JSON object of settings")
    elif config is not None:
        given = dict(config)
    unknown = sorted(set(given) - set(DEFAULT_AUDIO_CONFIG))
    if unknown:
        raise ValueError(f"unknown audio config keys {unknown}; accepted: "
                         f"{', '.join(DEFAULT_AUDIO_CONFIG)}")
    cfg = {**DEFAULT_AUDIO_CONFIG, **given}
    if cfg["win_length"] is None:
        cfg["win_length"] = cfg["n_fft"]
    _check_config(cfg)
    return cfg


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_config(cfg: dict[str, Any]) -> None:
    for key in ("sr", "n_fft", "hop_length", "win_length", "n_mels", "freq_ratio"):
        if not _is_int(cfg[key]) or cfg[key] < 1:
            raise ValueError(f"audio config {key} must be a positive integer, got {cfg[key]!r}")
    if cfg["win_length"] > cfg["n_fft"]:
        raise ValueError(f"audio config win_length ({cfg['win_length']}) must be at most n_fft "
                         f"({cfg['n_fft']})")
    if cfg["window"] not in WINDOWS:
        raise ValueError(f"audio config window {cfg['window']!r} is not one of "
                         f"{', '.join(WINDOWS)}")
    if not isinstance(cfg["center"], bool):
        raise ValueError(f"audio config center must be true or false, got {cfg['center']!r}")
    if cfg["pad_mode"] not in PAD_MODES:
        raise ValueError(f"audio config pad_mode {cfg['pad_mode']!r} is not one of "
                         f"{', '.join(PAD_MODES)}")
    if not (_is_number(cfg["fmin"]) and cfg["fmin"] >= 0):
        raise ValueError(f"audio config fmin must be a number >= 0, got {cfg['fmin']!r}")
    if cfg["fmax"] is None:
        cfg["fmax"] = cfg["sr"] / 2
    if not (_is_number(cfg["fmax"]) and cfg["fmax"] > cfg["fmin"]):
        raise ValueError(f"audio config fmax must be a number above fmin ({cfg['fmin']}), got "
                         f"{cfg['fmax']!r}")
    for key in ("ref", "amin"):
        if not (_is_number(cfg[key]) and cfg[key] > 0):
            raise ValueError(f"audio config {key} must be a number > 0, got {cfg[key]!r}")
    if cfg["top_db"] is not None and not (_is_number(cfg["top_db"]) and cfg["top_db"] >= 0):
        raise ValueError(f"audio config top_db must be null or a number >= 0, got "
                         f"{cfg['top_db']!r}")
    if cfg["n_mels"] * cfg["freq_ratio"] < MIN_WIDTH:
        raise ValueError(f"audio config n_mels x freq_ratio = {cfg['n_mels'] * cfg['freq_ratio']}"
                         f" rows is below the {MIN_WIDTH} the model needs")
    least = min_frames(cfg)
    if cfg["frames"] is not None and (not _is_int(cfg["frames"]) or cfg["frames"] < least):
        raise ValueError(f"audio config frames must be null or an integer >= {least} "
                         f"({MIN_WIDTH} columns at freq_ratio {cfg['freq_ratio']}), got "
                         f"{cfg['frames']!r}")


def min_frames(cfg: dict[str, Any]) -> int:
    """The fewest frames a clip may have: the model needs a width of :data:`MIN_WIDTH`."""
    return MIN_WIDTH * cfg["freq_ratio"]


# --------------------------------------------------------------------------- reading
def read_audio(path: str | os.PathLike, sr: int = 16000) -> np.ndarray:
    """A mono float32 waveform at ``sr`` Hz (16-bit PCM reads as ``int16 / 32768``).

    Several channels are averaged (an :class:`AudioWarning` says so); another sample rate is
    resampled with soxr (another warning).

    Raises:
        FileNotFoundError: The file does not exist.
        ImportError: soundfile (or soxr, when resampling is needed) is not installed.
        ValueError: Empty, unreadable, not audio, or holding no samples.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: not an audio file (it is a folder)")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: not an audio file (empty file)")
    try:
        import soundfile
    except ImportError:
        raise ImportError(f"{path}: reading audio needs soundfile: {INSTALL_HINT}") from None
    try:
        wave, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError, ...
        detail = " ".join(str(exc).split())[:160]
        raise ValueError(f"{path}: not an audio file soundfile can read ({detail})") from None
    if wave.shape[0] == 0:
        raise ValueError(f"{path}: the clip holds no samples (zero length)")
    if wave.shape[1] > 1:
        warnings.warn(f"{path}: {wave.shape[1]} channels mixed down to mono (their mean)",
                      AudioWarning, stacklevel=2)
    mono = wave.mean(axis=1, dtype=np.float64).astype(np.float32) if wave.shape[1] > 1 \
        else wave[:, 0]
    if not np.isfinite(mono).all():
        raise ValueError(f"{path}: the clip holds NaN or infinite samples")
    if rate != sr:
        try:
            import soxr
        except ImportError:
            raise ImportError(f"{path} is sampled at {rate} Hz and the front end needs {sr} Hz; "
                              f"resampling needs soxr: {INSTALL_HINT}") from None
        warnings.warn(f"{path}: resampled from {rate} Hz to {sr} Hz (soxr)", AudioWarning,
                      stacklevel=2)
        mono = soxr.resample(mono, rate, sr, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(mono)


# --------------------------------------------------------------------------- mel scale
def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    mel = hz / f_sp
    high = hz >= min_log_hz
    return np.where(high, min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep,
                    mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)),
                    f_sp * mel)


def mel_frequencies(n: int, fmin: float, fmax: float) -> np.ndarray:
    """``n`` frequencies (Hz) evenly spaced on Slaney's mel scale from ``fmin`` to ``fmax``."""
    mels = np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n)
    return _mel_to_hz(mels)


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """librosa's ``filters.mel`` (Slaney scale, Slaney area norm): ``(n_mels, 1 + n_fft // 2)``.

    Bands above the Nyquist frequency come out empty (all zero), as librosa's do.
    """
    fftfreqs = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
    mel_f = mel_frequencies(n_mels + 2, fmin, fmax)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, None]
    return weights


def band_centres(cfg: dict[str, Any]) -> np.ndarray:
    """Centre frequency (Hz) of each mel band of a config."""
    return mel_frequencies(cfg["n_mels"] + 2, cfg["fmin"], cfg["fmax"])[1:-1]


# --------------------------------------------------------------------------- front end
def _window(cfg: dict[str, Any]) -> torch.Tensor:
    import torch

    make = {"hann": torch.hann_window, "hamming": torch.hamming_window,
            "blackman": torch.blackman_window, "bartlett": torch.bartlett_window}[cfg["window"]]
    return make(cfg["win_length"], periodic=True, dtype=torch.float64)


def log_mel(wave: Any, config: dict | None = None) -> torch.Tensor:
    """The log-mel spectrogram ``(T, n_mels)`` in dB of a mono waveform (steps 1-3).

    The STFT is computed in float64 and the result returned in float32.
    """
    import torch

    cfg = resolve_audio_config(config)
    x = torch.as_tensor(np.asarray(wave), dtype=torch.float64).reshape(-1)
    spec = torch.stft(x, cfg["n_fft"], hop_length=cfg["hop_length"],
                      win_length=cfg["win_length"], window=_window(cfg), center=cfg["center"],
                      pad_mode=cfg["pad_mode"], return_complex=True)  # (F, T)
    power = spec.abs().pow(2).T  # (T, F)
    mel_w = torch.from_numpy(mel_filterbank(cfg["sr"], cfg["n_fft"], cfg["n_mels"], cfg["fmin"],
                                            cfg["fmax"])).double()
    mel = power @ mel_w.T  # (T, n_mels)
    db = 10.0 * torch.log10(mel.clamp_min(cfg["amin"]))
    db = db - 10.0 * math.log10(max(cfg["amin"], cfg["ref"]))
    if cfg["top_db"] is not None:
        db = db.clamp_min(float(db.max()) - cfg["top_db"])
    return db.float()


def floor_db(cfg: dict[str, Any]) -> float:
    """The dB value of silence (``amin``): what ``frames`` pads with (-100 dB by default)."""
    return 10.0 * math.log10(cfg["amin"]) - 10.0 * math.log10(max(cfg["amin"], cfg["ref"]))


def pad_or_crop(spec: torch.Tensor, frames: int, value: float) -> torch.Tensor:
    """``(T, F)`` padded at the end with ``value`` or cropped to ``frames`` frames."""
    import torch.nn.functional as F

    t = spec.shape[0]
    if t >= frames:
        return spec[:frames]
    return F.pad(spec, (0, 0, 0, frames - t), value=value)


def fold(spec: torch.Tensor, freq_ratio: int = 2) -> torch.Tensor:
    """Fold a ``(T, F)`` spectrogram into a ``(freq_ratio * F, T' / freq_ratio)`` image.

    When ``T`` is not a multiple of ``freq_ratio`` it is first resized to the next multiple
    ``T'`` (bicubic, ``align_corners=True``, along time only). Row ``r * F + f``, column ``t``
    holds frame ``r * T' / freq_ratio + t``, band ``f``.
    """
    import torch.nn.functional as F

    t, bands = spec.shape
    target = -(-t // freq_ratio) * freq_ratio
    if target != t:
        spec = F.interpolate(spec[None, None], size=(target, bands), mode="bicubic",
                             align_corners=True)[0, 0]
    width = target // freq_ratio
    return spec.reshape(freq_ratio, width, bands).permute(0, 2, 1).reshape(freq_ratio * bands,
                                                                            width)


def unfold(image: Any, n_mels: int, freq_ratio: int = 2, frames: int | None = None) -> Any:
    """The inverse of :func:`fold` for maps: ``(..., freq_ratio * n_mels, W)`` ->
    ``(..., n_mels, frames)`` on the (mel band, frame) plane.

    With ``frames`` (the clip's frame count before an odd count was resized) other than
    ``freq_ratio * W``, the time axis is resampled linearly (``align_corners=True``) to it.
    Accepts a tensor or an array and returns the same kind.
    """
    import torch
    import torch.nn.functional as F

    is_numpy = not isinstance(image, torch.Tensor)
    t = torch.as_tensor(np.asarray(image) if is_numpy else image)
    *lead, rows, width = t.shape
    if rows != freq_ratio * n_mels:
        raise ValueError(f"a folded map has {freq_ratio * n_mels} rows (freq_ratio {freq_ratio} "
                         f"x {n_mels} mel bands), got {rows}")
    flat = t.reshape(-1, freq_ratio, n_mels, width).permute(0, 2, 1, 3)
    out = flat.reshape(-1, n_mels, freq_ratio * width)
    if frames is not None and frames != freq_ratio * width:
        out = F.interpolate(out[:, None].float(), size=(n_mels, frames), mode="bilinear",
                            align_corners=True)[:, 0].to(t.dtype)
    out = out.reshape(*lead, n_mels, out.shape[-1])
    return out.numpy() if is_numpy else out


def fold_meta(cfg: dict[str, Any], frames: int) -> dict[str, Any]:
    """What :func:`unfold` and the time-frequency figure need, as stored in an explanation's
    ``meta["fold"]``: the fold, the clip's frame count and the axes' units."""
    return {"freq_ratio": cfg["freq_ratio"], "n_mels": cfg["n_mels"], "frames": int(frames),
            "sr": cfg["sr"], "hop_length": cfg["hop_length"], "fmin": cfg["fmin"],
            "fmax": cfg["fmax"]}


def load_audio(path: str | os.PathLike, model: Any = None, config: dict | str | None = None,
               with_meta: bool = False) -> tuple:
    """Read an audio file and compute the model input with the fork's front end.

    Args:
        path: A ``.wav``, ``.flac`` or ``.ogg`` file (anything soundfile reads).
        model: The model, for its input channels (the 1-channel image is repeated to them; a
            3-channel Conformer does the same with a 1-channel input). None: 1 channel.
        config: Front-end settings (dict or JSON file; see :func:`resolve_audio_config`).
        with_meta: Also return the metadata to store in an explanation's ``meta``
            (``{"audio": config and clip facts, "fold": fold_meta(...)}``).

    Returns:
        ``(x, display)`` (and ``meta`` with ``with_meta``): ``x`` the ``(1, C, freq_ratio *
        n_mels, T' / freq_ratio)`` float32 model input in dB, ``display`` the folded image
        min-max scaled to [0, 1], ``(H, W)`` float32, for drawing.

    Raises:
        FileNotFoundError: No such file.
        ImportError: The ``audio`` extra is not installed.
        ValueError: Not audio, zero length, shorter than ``32 * freq_ratio`` frames, longer
            than :data:`MAX_FRAMES` without ``frames``, or a bad config.
    """
    cfg = resolve_audio_config(config)
    wave = read_audio(path, cfg["sr"])
    spec = log_mel(wave, cfg)
    frames = int(spec.shape[0])
    seconds = wave.shape[0] / cfg["sr"]
    if cfg["frames"] is not None:
        spec = pad_or_crop(spec, cfg["frames"], floor_db(cfg))
    elif frames < min_frames(cfg):
        raise SettingError(
            f"{path}: the clip is {seconds:.2f} s long ({frames} frames); the model needs at "
            f"least {min_frames(cfg)} frames ({_frames_seconds(min_frames(cfg), cfg):.2f} s, an "
            f"input {MIN_WIDTH} wide); set " "{frames} to pad it",
            frames=Setting("frames", placeholder="N"))
    elif frames > MAX_FRAMES:
        raise SettingError(
            f"{path}: the clip is {seconds:.1f} s long ({frames} frames), over the limit of "
            f"{MAX_FRAMES} frames ({_frames_seconds(MAX_FRAMES, cfg):.1f} s); cut it, or set "
            "{frames} to crop it", frames=Setting("frames", placeholder="N"))
    image = fold(spec, cfg["freq_ratio"])
    chans = (model_in_chans(model) if model is not None else None) or 1
    x = image[None, None].expand(1, chans, -1, -1).contiguous()
    lo, hi = float(image.min()), float(image.max())
    display = ((image - lo) / (hi - lo) if hi > lo else image * 0).numpy().astype(np.float32)
    if not with_meta:
        return x, display
    used = int(spec.shape[0])
    meta = {"audio": {**cfg, "file_frames": frames, "seconds": round(seconds, 6),
                      "input_size": list(image.shape)},
            "fold": fold_meta(cfg, used)}
    return x, display, meta


def _frames_seconds(frames: int, cfg: dict[str, Any]) -> float:
    """The shortest clip with ``frames`` frames (centred STFT): ``(frames - 1) * hop / sr``."""
    return (frames - 1) * cfg["hop_length"] / cfg["sr"]
