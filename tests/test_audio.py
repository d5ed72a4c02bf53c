"""The audio front end: the spectrogram fork's log-mel and fold, cross-checked against
torchlibrosa (what the fork computes with) and librosa's filter bank; reading and its errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F
from _fork import chirp

from conformer_xai import audio


def torchlibrosa_reference(pcm: np.ndarray) -> torch.Tensor:
    """The fork's steps 1-3 with torchlibrosa, then its fold (step 5), written out directly."""
    from torchlibrosa.stft import LogmelFilterBank, Spectrogram

    wave = torch.from_numpy(pcm.astype(np.float32) / 32768.0)[None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa: empty mel filters above the Nyquist frequency
        spec = Spectrogram(n_fft=512, hop_length=160, win_length=512, window="hann",
                           center=True, pad_mode="reflect", freeze_parameters=True)(wave)
        logmel = LogmelFilterBank(sr=16000, n_fft=512, n_mels=112, fmin=50, fmax=14000,
                                  ref=1.0, amin=1e-10, top_db=None, freeze_parameters=True)(spec)
    frames = logmel.shape[2]
    if frames % 2:
        logmel = F.interpolate(logmel, size=(frames + 1, 112), mode="bicubic", align_corners=True)
    half = logmel.shape[2] // 2
    image = torch.zeros(224, half)
    for r in range(2):
        for t in range(half):
            image[r * 112:(r + 1) * 112, t] = logmel[0, 0, r * half + t]
    return image


@pytest.mark.parametrize(("seconds", "frames"), [(1.0, 101), (1.01, 102)])
def test_load_audio_equals_torchlibrosa_and_the_fold(tmp_path: Path, seconds, frames):
    pcm = chirp(seconds)
    path = tmp_path / "clip.wav"
    soundfile.write(path, pcm, 16000, subtype="PCM_16")
    x, display, meta = audio.load_audio(path, with_meta=True)
    reference = torchlibrosa_reference(pcm)
    assert meta["fold"]["frames"] == frames
    assert x.shape == (1, 1, 224, (frames + 1) // 2) == (1, 1, *reference.shape)
    assert x.dtype == torch.float32
    assert float((x[0, 0] - reference).abs().max()) < 0.05
    empty = np.flatnonzero(audio.mel_filterbank(16000, 512, 112, 50, 14000).sum(axis=1) == 0)
    assert 0 < len(empty) < 20 and empty[-1] == 111  # bands above 8 kHz: -100 dB, as the fork's
    for rows in (empty, 112 + empty):  # (bicubic resizing of odd counts keeps them, to rounding)
        assert float(x[0, 0, rows].max()) == pytest.approx(-100.0, abs=1e-3)
    assert display.shape == tuple(reference.shape)
    assert display.min() == 0.0 and display.max() == 1.0
    assert meta["audio"]["n_mels"] == 112 and meta["audio"]["file_frames"] == frames


def test_mel_filterbank_is_librosas():
    import librosa

    for args in ((16000, 512, 112, 50.0, 14000.0), (22050, 1024, 64, 0.0, 11025.0)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = librosa.filters.mel(sr=args[0], n_fft=args[1], n_mels=args[2],
                                           fmin=args[3], fmax=args[4])
        np.testing.assert_allclose(audio.mel_filterbank(*args), expected, rtol=1e-5, atol=1e-8)


def test_unfold_inverts_the_fold_and_maps_follow_time():
    spec = torch.arange(6 * 4, dtype=torch.float32).reshape(6, 4)  # 6 frames, 4 bands
    image = audio.fold(spec, 2)
    assert image.shape == (8, 3)
    assert image[4 + 1, 2] == spec[3 + 2, 1]  # row r*F + f, column t: frame r*T/2 + t, band f
    torch.testing.assert_close(audio.unfold(image, 4, 2), spec.T)
    np.testing.assert_array_equal(audio.unfold(image.numpy(), 4, 2), spec.T.numpy())
    odd = audio.fold(spec[:5], 2)  # 5 frames resized to 6 first
    assert odd.shape == (8, 3)
    assert audio.unfold(odd, 4, 2, frames=5).shape == (4, 5)
    with pytest.raises(ValueError, match="8 rows"):
        audio.unfold(torch.zeros(7, 3), 4, 2)


def test_frames_pads_with_the_floor_and_crops(tmp_path: Path):
    path = tmp_path / "short.wav"
    soundfile.write(path, chirp(0.5), 16000, subtype="PCM_16")  # 51 frames: under 64
    with pytest.raises(ValueError, match=r"short.wav: the clip is 0.50 s long \(51 frames\); the "
                                         r"model needs at least 64 frames"):
        audio.load_audio(path)
    x, _ = audio.load_audio(path, config={"frames": 448})
    assert x.shape == (1, 1, 224, 224)
    assert float(x[0, 0, :112, 51:].max()) == pytest.approx(-100.0)  # padded frames 51..223
    assert float(x[0, 0, 112:].max()) == pytest.approx(-100.0)       # frames 224..447
    long = tmp_path / "long.wav"
    soundfile.write(long, chirp(1.5), 16000, subtype="PCM_16")
    assert audio.load_audio(long, config={"frames": 64})[0].shape == (1, 1, 224, 32)


def test_config_file_channels_stereo_and_resampling(tmp_path: Path):
    cfg = tmp_path / "audio.json"
    cfg.write_text('{"n_mels": 64, "fmax": 8000, "top_db": 80}')
    path = tmp_path / "stereo.wav"
    pcm = chirp(1.0, sr=22050).astype(np.float32) / 32768
    soundfile.write(path, np.stack([pcm, 0.5 * pcm], axis=1), 22050)
    with pytest.warns(audio.AudioWarning) as caught:
        x, _, meta = audio.load_audio(path, config=cfg, with_meta=True)
    messages = " ".join(str(w.message) for w in caught)
    assert "2 channels mixed down to mono" in messages
    assert "resampled from 22050 Hz to 16000 Hz" in messages
    assert x.shape[2] == 128 and meta["audio"]["top_db"] == 80
    assert float(x.max() - x.min()) <= 80.0 + 1e-4

    class ThreeChannels(torch.nn.Module):
        in_chans = 3

    with pytest.warns(audio.AudioWarning):
        x3, _ = audio.load_audio(path, model=ThreeChannels(), config=cfg)
    assert x3.shape[1] == 3 and torch.equal(x3[:, 0], x3[:, 2])
    with pytest.raises(ValueError, match="unknown audio config keys \\['nmels'\\]"):
        audio.resolve_audio_config({"nmels": 64})
    with pytest.raises(ValueError, match="win_length"):
        audio.resolve_audio_config({"win_length": 1024})


def test_bad_audio_files(tmp_path: Path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.wav: not an audio file \(empty file\)"):
        audio.load_audio(empty)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n")
    with pytest.raises(ValueError, match="notes.wav: not an audio file soundfile can read"):
        audio.load_audio(text)
    silent = tmp_path / "zero.wav"
    soundfile.write(silent, np.zeros(0, dtype=np.int16), 16000, subtype="PCM_16")
    with pytest.raises(ValueError, match=r"zero.wav: the clip holds no samples"):
        audio.load_audio(silent)
    with pytest.raises(FileNotFoundError, match="missing.wav: no such file"):
        audio.load_audio(tmp_path / "missing.wav")
