"""Procedural sound scenes with ground-truth time-frequency masks: the audio twin of the scenes.

A clip is 16 kHz mono, 71 520 samples (4.47 s): with the default front end of
:mod:`conformer_xai.audio` (centred STFT, hop 160) that is exactly 448 frames, folded to a
224 x 224 model input. Each clip holds a background (coloured noise and a mains hum), one to
three distractor events that belong to no class (band-limited noise bursts, low thuds) and one
deciding event whose time-frequency extent is known exactly:

* ``up_chirp`` / ``down_chirp``: an exponential sweep over 1.6-2.6 octaves;
* ``two_tone_alarm``: a tone alternating between two pitches;
* ``click_burst``: a train of short Gabor clicks;
* ``whistle``: a narrow-band tone with a slow vibrato;
* ``buzz_high_tag`` / ``buzz_low_tag``: the part-and-body classes (the audio twin of the two
  birds): the same harmonic buzz (the body) and a short tone at its start (the marker, about
  0.12-0.18 s) that is either high (4.4-6.0 kHz) or low (2.2-3.0 kHz); only the marker decides.

The masks are drawn on the log-mel (band x frame) grid of the default front end (112 Slaney
bands 50-14000 Hz, 448 frames) from the event's construction, not from its spectrogram: a cell
belongs to the mask when the event sounds within the frame's window (512 samples) at a
frequency within the band's filter support, widened by the Hann window's main lobe (and, for
clicks, by three standard deviations of the click's Gaussian spectrum). ``tests`` check that at
least 90 % of the event's linear mel power lies inside its mask.

A scene is a pure function of its random generator; numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..audio import DEFAULT_AUDIO_CONFIG, mel_frequencies

#: The sound classes, in label order.
SOUND_CLASS_NAMES: tuple[str, ...] = (
    "up_chirp",
    "down_chirp",
    "two_tone_alarm",
    "click_burst",
    "whistle",
    "buzz_high_tag",
    "buzz_low_tag",
)
SOUND_NUM_CLASSES = len(SOUND_CLASS_NAMES)
#: Part-and-body classes: the same buzz, only the marker's pitch differs.
SOUND_PART_CLASSES: tuple[str, ...] = ("buzz_high_tag", "buzz_low_tag")
#: Labels of :data:`SOUND_PART_CLASSES`.
SOUND_PART_LABELS: tuple[int, ...] = tuple(SOUND_CLASS_NAMES.index(n) for n in SOUND_PART_CLASSES)

#: Sample rate (Hz), hop (samples) and STFT size of the default front end.
SR = int(DEFAULT_AUDIO_CONFIG["sr"])
HOP = int(DEFAULT_AUDIO_CONFIG["hop_length"])
N_FFT = int(DEFAULT_AUDIO_CONFIG["n_fft"])
N_MELS = int(DEFAULT_AUDIO_CONFIG["n_mels"])
#: Frames of a clip after the default front end, and its length in samples.
FRAMES = 448
SAMPLES = (FRAMES - 1) * HOP
SECONDS = SAMPLES / SR
#: Half the Hann main lobe (two bins of SR / N_FFT Hz) plus one bin of margin.
_LOBE_HZ = 3 * SR / N_FFT
#: Events stay below this frequency (the Nyquist frequency is 8 kHz).
_F_TOP = 7200.0
_RAMP_S = 0.006


@dataclass(frozen=True)
class Component:
    """One sounding part of an event, as its mask needs it.

    ``kind`` ``"tone"``: a tone from ``t0`` to ``t1`` (seconds) whose instantaneous frequency is
    ``freq(t)`` (``times``/``freqs`` sampled every millisecond). ``kind`` ``"click"``: a Gabor
    click centred at ``t0`` with carrier ``freqs[0]`` and time spread ``sigma`` (seconds).
    """

    kind: str
    t0: float
    t1: float
    times: np.ndarray
    freqs: np.ndarray
    sigma: float = 0.0


@dataclass(frozen=True)
class SoundScene:
    """One generated sound scene.

    Attributes:
        wave: ``(SAMPLES,)`` float32 mono waveform at :data:`SR` Hz, within [-1, 1].
        label: Class index into :data:`SOUND_CLASS_NAMES`.
        class_name: ``SOUND_CLASS_NAMES[label]``.
        object_mask: ``(N_MELS, FRAMES)`` bool, the deciding event (marker included) on the
            log-mel grid, band ``f`` (low first) x frame ``t``.
        part_mask: ``(N_MELS, FRAMES)`` bool, the marker; all False for classes without one.
        event: ``(SAMPLES,)`` float32, the deciding event alone (as mixed into ``wave``).
        part: ``(SAMPLES,)`` float32, the marker alone (zeros without one).
    """

    wave: np.ndarray
    label: int
    class_name: str
    object_mask: np.ndarray
    part_mask: np.ndarray
    event: np.ndarray = field(repr=False)
    part: np.ndarray = field(repr=False)

    @property
    def has_part(self) -> bool:
        """Whether the class is a part-and-body class."""
        return self.class_name in SOUND_PART_CLASSES


def pcm16(wave: np.ndarray) -> np.ndarray:
    """A waveform in [-1, 1] as the 16-bit samples a wav file stores (``round(x * 32768)``,
    clipped); reading them back as ``int16 / 32768`` is what the fork's front end does."""
    return np.clip(np.round(np.asarray(wave, dtype=np.float64) * 32768.0), -32768,
                   32767).astype(np.int16)


# --------------------------------------------------------------------------- synthesis
def _time() -> np.ndarray:
    return np.arange(SAMPLES, dtype=np.float64) / SR


def _ramp_envelope(t: np.ndarray, t0: float, t1: float, ramp: float = _RAMP_S) -> np.ndarray:
    """1 inside [t0, t1] with raised-cosine ramps of ``ramp`` s inside the edges, 0 outside."""
    up = np.clip((t - t0) / ramp, 0.0, 1.0)
    down = np.clip((t1 - t) / ramp, 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * np.minimum(up, down))) * ((t >= t0) & (t <= t1))


def _tone(t0: float, t1: float, freq, amp: float, phase: float) -> tuple[np.ndarray, Component]:
    """A tone with instantaneous frequency ``freq(t)`` (a callable of time in s)."""
    t = _time()
    i0, i1 = max(0, int(math.floor(t0 * SR))), min(SAMPLES, int(math.ceil(t1 * SR)) + 1)
    seg = t[i0:i1]
    inst = np.asarray(freq(seg), dtype=np.float64)
    ph = phase + 2.0 * np.pi * np.cumsum(inst) / SR
    out = np.zeros(SAMPLES)
    out[i0:i1] = amp * _ramp_envelope(seg, t0, t1) * np.sin(ph)
    times = np.arange(t0, t1 + 5e-4, 1e-3)
    return out, Component("tone", t0, t1, times, np.asarray(freq(times), dtype=np.float64))


def _click(tc: float, fc: float, sigma: float, amp: float) -> tuple[np.ndarray, Component]:
    out = np.zeros(SAMPLES)
    i0 = max(0, int((tc - 8 * sigma) * SR))
    i1 = min(SAMPLES, int((tc + 8 * sigma) * SR) + 1)
    t = np.arange(i0, i1, dtype=np.float64) / SR
    out[i0:i1] = amp * np.exp(-0.5 * ((t - tc) / sigma) ** 2) * np.cos(2 * np.pi * fc * (t - tc))
    return out, Component("click", tc, tc, np.array([tc]), np.array([fc]), sigma)


def _event_window(rng: np.random.Generator, duration: float) -> tuple[float, float]:
    t0 = rng.uniform(0.08, SECONDS - 0.08 - duration)
    return t0, t0 + duration


def _chirp(rng: np.random.Generator, up: bool, amp: float) -> list:
    dur = rng.uniform(0.45, 1.1)
    lo = rng.uniform(300.0, 1100.0)
    hi = min(_F_TOP, lo * 2.0 ** rng.uniform(1.6, 2.6))
    t0, t1 = _event_window(rng, dur)
    a, b = (lo, hi) if up else (hi, lo)

    def freq(t):
        return a * (b / a) ** np.clip((t - t0) / (t1 - t0), 0.0, 1.0)

    return [_tone(t0, t1, freq, amp, rng.uniform(0, 2 * np.pi))]


def _alarm(rng: np.random.Generator, amp: float) -> list:
    f1 = rng.uniform(700.0, 2400.0)
    f2 = f1 * rng.uniform(1.3, 1.6)
    seg = rng.uniform(0.08, 0.14)
    n = int(rng.integers(6, 11))
    t0, t1 = _event_window(rng, n * seg)

    def freq(t):
        k = np.floor(np.clip(t - t0, 0.0, None) / seg).astype(int)
        return np.where(k % 2 == 0, f1, f2)

    return [_tone(t0, t1, freq, amp, rng.uniform(0, 2 * np.pi))]


def _clicks(rng: np.random.Generator, amp: float) -> list:
    n = int(rng.integers(6, 13))
    gap = rng.uniform(0.03, 0.07)
    fc = rng.uniform(1500.0, 5000.0)
    sigma = rng.uniform(4e-4, 8e-4)
    t0, _ = _event_window(rng, (n - 1) * gap + 0.01)
    t0 += 0.005
    return [_click(t0 + k * gap, fc, sigma, amp * 3.0) for k in range(n)]


def _whistle(rng: np.random.Generator, amp: float) -> list:
    dur = rng.uniform(0.6, 1.4)
    f0 = rng.uniform(1200.0, 4000.0)
    depth = rng.uniform(20.0, 60.0)
    rate = rng.uniform(4.0, 7.0)
    vib_phase = rng.uniform(0, 2 * np.pi)
    t0, t1 = _event_window(rng, dur)

    def freq(t):
        return f0 + depth * np.sin(2 * np.pi * rate * (t - t0) + vib_phase)

    return [_tone(t0, t1, freq, amp, rng.uniform(0, 2 * np.pi))]


def _buzz(rng: np.random.Generator, amp: float, high_tag: bool) -> tuple[list, list]:
    """The body (harmonic buzz) and the marker (a short tone at its start)."""
    dur = rng.uniform(0.8, 1.4)
    f0 = rng.uniform(180.0, 320.0)
    t0, t1 = _event_window(rng, dur)
    body = [_tone(t0, t1, lambda t, k=k: np.full_like(t, k * f0), amp / k,
                  rng.uniform(0, 2 * np.pi)) for k in range(1, 6)]
    tag_f = rng.uniform(4400.0, 6000.0) if high_tag else rng.uniform(2200.0, 3000.0)
    tag_len = rng.uniform(0.12, 0.18)
    tag_start = t0 + rng.uniform(0.0, 0.05)
    tag = [_tone(tag_start, tag_start + tag_len, lambda t: np.full_like(t, tag_f), amp * 0.8,
                 rng.uniform(0, 2 * np.pi))]
    return body, tag


def _coloured_noise(rng: np.random.Generator, alpha: float) -> np.ndarray:
    """Gaussian noise with a 1 / f^alpha power spectrum, unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(SAMPLES))
    f = np.fft.rfftfreq(SAMPLES, 1.0 / SR)
    spec *= 1.0 / np.maximum(f, 20.0) ** (alpha / 2.0)
    x = np.fft.irfft(spec, SAMPLES)
    return x / np.sqrt(np.mean(x ** 2))


def _hum(rng: np.random.Generator) -> np.ndarray:
    t = _time()
    base = 50.0 if rng.uniform() < 0.5 else 60.0
    out = np.zeros(SAMPLES)
    for k in range(1, int(rng.integers(3, 6)) + 1):
        out += rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * base * k * t
                                                  + rng.uniform(0, 2 * np.pi))
    return out


def _distractor(rng: np.random.Generator) -> np.ndarray:
    """A noise burst in a random band, or a low thud: events of no class."""
    t = _time()
    if rng.uniform() < 0.6:
        dur = rng.uniform(0.08, 0.5)
        t0, t1 = _event_window(rng, dur)
        lo = rng.uniform(200.0, 5000.0)
        hi = min(7800.0, lo * rng.uniform(1.5, 3.0))
        spec = np.fft.rfft(rng.standard_normal(SAMPLES))
        f = np.fft.rfftfreq(SAMPLES, 1.0 / SR)
        spec[(f < lo) | (f > hi)] = 0.0
        x = np.fft.irfft(spec, SAMPLES)
        x /= np.sqrt(np.mean(x ** 2))
        return rng.uniform(0.02, 0.08) * x * _ramp_envelope(t, t0, t1, 0.01)
    t0 = rng.uniform(0.05, SECONDS - 0.4)
    f = rng.uniform(60.0, 180.0)
    decay = rng.uniform(0.04, 0.15)
    env = np.where(t >= t0, np.exp(-np.clip(t - t0, 0.0, None) / decay), 0.0)
    env *= np.clip((t - t0) / 0.003, 0.0, 1.0)
    return rng.uniform(0.05, 0.25) * env * np.sin(2 * np.pi * f * (t - t0))


# --------------------------------------------------------------------------- masks
@dataclass(frozen=True)
class _Grid:
    centres: np.ndarray  # frame centre times (s)
    lo: np.ndarray  # each band's lower filter edge (Hz)
    hi: np.ndarray  # each band's upper filter edge (Hz)


_GRID: _Grid | None = None


def _grid() -> _Grid:
    global _GRID
    if _GRID is None:
        cfg = DEFAULT_AUDIO_CONFIG
        edges = mel_frequencies(N_MELS + 2, cfg["fmin"], cfg["fmax"])
        _GRID = _Grid(np.arange(FRAMES) * HOP / SR, edges[:-2], edges[2:])
    return _GRID


def component_mask(comp: Component) -> np.ndarray:
    """The ``(N_MELS, FRAMES)`` cells where a component sounds (see the module's docstring)."""
    g = _grid()
    half = N_FFT / 2 / SR
    mask = np.zeros((N_MELS, FRAMES), dtype=bool)
    if comp.kind == "click":
        spread_t = 3.5 * comp.sigma
        spread_f = 3.5 / (2 * np.pi * comp.sigma)
        frames = np.abs(g.centres - comp.t0) < half + spread_t
        f_lo, f_hi = comp.freqs[0] - spread_f - _LOBE_HZ, comp.freqs[0] + spread_f + _LOBE_HZ
        bands = (g.hi > f_lo) & (g.lo < f_hi)
        mask[np.ix_(bands, frames)] = True
        return mask
    for j in np.flatnonzero((g.centres > comp.t0 - half) & (g.centres < comp.t1 + half)):
        near = np.abs(comp.times - g.centres[j]) < half
        if not near.any():
            continue
        f = comp.freqs[near]
        # a tone switched on or off inside the window spreads by the ramp's bandwidth
        edge = 1.0 / _RAMP_S if (g.centres[j] - half < comp.t0 or g.centres[j] + half > comp.t1) \
            else 0.0
        f_lo, f_hi = f.min() - _LOBE_HZ - edge, f.max() + _LOBE_HZ + edge
        mask[(g.hi > f_lo) & (g.lo < f_hi), j] = True
    return mask


def _mask(parts: list) -> np.ndarray:
    mask = np.zeros((N_MELS, FRAMES), dtype=bool)
    for _, comp in parts:
        mask |= component_mask(comp)
    return mask


def _sum(parts: list) -> np.ndarray:
    out = np.zeros(SAMPLES)
    for wave, _ in parts:
        out += wave
    return out


# --------------------------------------------------------------------------- scenes
def render_sound_scene(rng: np.random.Generator | int, label: int | None = None) -> SoundScene:
    """Render one sound scene.

    Args:
        rng: A numpy Generator, or an int seed for ``np.random.default_rng``.
        label: Class to draw; drawn uniformly from ``rng`` when None.

    Returns:
        The :class:`SoundScene`.

    Raises:
        ValueError: on a bad label.
    """
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    if label is None:
        label = int(rng.integers(SOUND_NUM_CLASSES))
    elif isinstance(label, bool) or not (0 <= int(label) < SOUND_NUM_CLASSES):
        raise ValueError(f"label must be in 0..{SOUND_NUM_CLASSES - 1}, got {label}")
    label = int(label)
    name = SOUND_CLASS_NAMES[label]
    amp = rng.uniform(0.08, 0.3)

    # background: coloured noise (white to brown) and a mains hum
    background = rng.uniform(0.002, 0.012) * _coloured_noise(rng, rng.uniform(0.0, 2.0))
    background += rng.uniform(0.002, 0.03) * _hum(rng)
    for _ in range(int(rng.integers(1, 4))):
        background += _distractor(rng)

    tag: list = []
    if name in ("up_chirp", "down_chirp"):
        body = _chirp(rng, name == "up_chirp", amp)
    elif name == "two_tone_alarm":
        body = _alarm(rng, amp)
    elif name == "click_burst":
        body = _clicks(rng, amp)
    elif name == "whistle":
        body = _whistle(rng, amp)
    else:
        body, tag = _buzz(rng, amp, name == "buzz_high_tag")
    part_wave = _sum(tag)
    event = _sum(body) + part_wave
    object_mask = _mask(body + tag)
    part_mask = _mask(tag) if tag else np.zeros((N_MELS, FRAMES), dtype=bool)

    gain = 10.0 ** (rng.uniform(-6.0, 6.0) / 20.0)
    wave = (background + event) * gain
    peak = float(np.abs(wave).max())
    if peak > 0.99:  # keep the clip within [-1, 1] (a 16-bit file holds it unchanged)
        gain *= 0.99 / peak
        wave = (background + event) * gain
    return SoundScene(wave=wave.astype(np.float32), label=label, class_name=name,
                      object_mask=object_mask, part_mask=part_mask,
                      event=(event * gain).astype(np.float32),
                      part=(part_wave * gain).astype(np.float32))
