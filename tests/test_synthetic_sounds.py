"""The sound scene generator: masks cover the deciding event, seeds reproduce clips bit for bit,
the Dataset gives the fork's 224 x 224 input, the bundled clips are the generator's (issue 17)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import conformer_xai as cx
from conformer_xai.audio import fold, log_mel
from conformer_xai.synthetic import (
    SOUND_CLASS_NAMES,
    SOUND_NUM_CLASSES,
    SOUND_PART_CLASSES,
    SoundScenes,
    pcm16,
    render_sound_scene,
)
from conformer_xai.synthetic.sounds import FRAMES, N_MELS, SAMPLES, SR

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "sounds"


@pytest.fixture(scope="module")
def clips() -> list:
    """Two clips of every class from the test split."""
    data = SoundScenes(2 * SOUND_NUM_CLASSES, seed=3, split="test")
    return [data.scene(i) for i in range(len(data))]


def _mel_power(wave: np.ndarray) -> np.ndarray:
    """Linear mel power (band, frame) of the default front end."""
    return (10.0 ** (log_mel(wave).double().numpy().T / 10.0))


def test_masks_hold_at_least_90_percent_of_the_event_power(clips):
    assert {c.class_name for c in clips} == set(SOUND_CLASS_NAMES)
    for c in clips:
        assert c.object_mask.shape == (N_MELS, FRAMES) and c.object_mask.dtype == bool
        power = _mel_power(c.event)
        inside = power[c.object_mask].sum() / power.sum()
        assert inside >= 0.9, (c.class_name, inside)
        # a mask, not the whole plane: the event covers a small part of it
        assert 0.002 < c.object_mask.mean() < 0.25, c.class_name
        if c.has_part:
            part_power = _mel_power(c.part)
            assert part_power[c.part_mask].sum() / part_power.sum() >= 0.9
            assert (c.part_mask <= c.object_mask).all()
            assert c.part_mask.sum() < 0.5 * c.object_mask.sum()  # the marker is short
        else:
            assert not c.part_mask.any() and not c.part.any()


def test_the_mask_is_where_the_event_is_and_not_elsewhere(clips):
    """Outside the mask the event is at least 20 dB below its peak cell (the alarm's pitch jumps
    splatter most: about 24 dB below), and the mask misses under 1 % of its power."""
    for c in clips:
        db = log_mel(c.event).numpy().T
        assert db[~c.object_mask].max() < db[c.object_mask].max() - 20, c.class_name
        power = _mel_power(c.event)
        assert power[~c.object_mask].sum() < 0.01 * power.sum(), c.class_name


def test_seeds_reproduce_clips_bit_for_bit():
    a = SoundScenes(4, seed=5, split="val")
    b = SoundScenes(4, seed=5, split="val")
    for i in (3, 0):  # order of access does not matter
        sa, sb = a.scene(i), b.scene(i)
        assert sa.wave.tobytes() == sb.wave.tobytes()
        assert np.array_equal(sa.object_mask, sb.object_mask)
        assert np.array_equal(sa.part_mask, sb.part_mask)
    assert render_sound_scene(9, label=2).wave.tobytes() == \
        render_sound_scene(9, label=2).wave.tobytes()
    assert a.scene(1).wave.tobytes() != SoundScenes(4, seed=6, split="val").scene(1).wave.tobytes()
    assert a.scene(1).wave.tobytes() != SoundScenes(4, seed=5, split="test").scene(1).wave.tobytes()


def test_clip_length_gives_448_frames_and_a_224_square_input(clips):
    c = clips[0]
    assert c.wave.shape == (SAMPLES,) and c.wave.dtype == np.float32
    assert np.abs(c.wave).max() <= 1.0
    assert log_mel(c.wave).shape == (FRAMES, N_MELS)
    item = SoundScenes(1, seed=3, split="test")[0]
    assert item["image"].shape == (1, 224, 224)
    torch.testing.assert_close(item["image"][0], fold(log_mel(c.wave)))
    assert item["object_mask"].shape == (N_MELS, FRAMES) and item["label"] == 0


def test_labels_cycle_and_part_classes_share_the_body():
    data = SoundScenes(SOUND_NUM_CLASSES, seed=0, split="train")
    assert [data.scene(i).class_name for i in range(len(data))] == list(SOUND_CLASS_NAMES)
    for name in SOUND_PART_CLASSES:
        scene = data.scene(SOUND_CLASS_NAMES.index(name))
        assert scene.has_part and scene.part_mask.any()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="label must be in 0..6"):
        render_sound_scene(0, label=7)
    with pytest.raises(ValueError, match="split must be one of"):
        SoundScenes(3, split="holdout")
    with pytest.raises(IndexError):
        SoundScenes(2).scene(2)


def test_bundled_clips_are_the_generators_and_load_as_224_square():
    listing = json.loads((EXAMPLES / "sounds.json").read_text())
    data = SoundScenes(listing["n"], seed=listing["seed"], split=listing["split"])
    assert sorted(p.name for p in EXAMPLES.glob("*.wav")) == sorted(
        e["audio"] for e in listing["clips"])
    assert {e["class_name"] for e in listing["clips"]} & set(SOUND_PART_CLASSES)
    import soundfile

    for e in listing["clips"]:
        scene = data.scene(e["index"])
        assert e["class_name"] == scene.class_name
        samples, rate = soundfile.read(EXAMPLES / e["audio"], dtype="int16")
        assert rate == SR and np.array_equal(samples, pcm16(scene.wave))
        mask = np.asarray(Image.open(EXAMPLES / e["object_mask"])) > 127
        assert np.array_equal(mask, scene.object_mask)
        if e["part_mask"]:
            assert np.array_equal(np.asarray(Image.open(EXAMPLES / e["part_mask"])) > 127,
                                  scene.part_mask)
        x, _ = cx.load_audio(EXAMPLES / e["audio"])
        assert x.shape == (1, 1, 224, 224)
