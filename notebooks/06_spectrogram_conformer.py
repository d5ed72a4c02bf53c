# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · A spectrogram Conformer as the fork trains it: checkpoint, wav, maps in time and frequency
#
# The `Conformer_xai` fork trains Conformer on 1-channel log-mel spectrograms in dB and
# saves checkpoints with a DeiT-style training script: `model`, `model_ema`, `optimizer`,
# `lr_scheduler`, `epoch` and `args` (an `argparse.Namespace` naming the model). This
# notebook:
#
# 1. saves a checkpoint exactly that way, holding the weights of `conformer_micro_audio`,
#    the small spectrogram Conformer shipped with conformer-xai (depth 3, 1 channel,
#    trained on the generated sound scenes of `conformer_xai.synthetic`: up-chirp,
#    down-chirp, two-tone alarm, click burst, whistle and a buzz with a high or a low
#    marker; see `conformer_xai/weights/MODEL_CARD.md`);
# 2. loads it with nothing but the file, `cx.load_model(checkpoint=path)`: the name comes
#    from `args.model`, the classes and channels from the tensors;
# 3. turns a wav into the model input with the fork's front end, `cx.load_audio`
#    (STFT 512/160, 112 Slaney mel bands 50-14000 Hz, dB, fold x2 into a 224-row image);
# 4. explains it and reads the branch maps on the time-frequency plane (unfolded back to
#    mel band x frame, time in seconds and frequency in Hz), and checks them against the
#    clip's ground-truth mask: where the deciding sound really is.

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
WAV = None            # your own .wav/.flac/.ogg; None: the bundled examples/sounds/clip_000.wav
CHECKPOINT = None     # your own fork checkpoint; None: write one holding the embedded model
SIZE_MISMATCH = "resize"  # the fork's behaviour for widths that are not multiples of 32
OUT_DIR = None        # where the files go; None: a temporary folder
DEVICE = "cpu"

# %% [markdown]
# The environment variable `CONFORMER_XAI_FAST=1` (set by the test suite) shrinks the
# numbers of images and steps so that the notebook runs in well under a minute; the
# parameters above are the defaults of a normal run.

# %%
# %matplotlib inline
import argparse
import json
from pathlib import Path

import numpy as np
import torch
from IPython.display import display
from PIL import Image

import conformer_xai as cx
from conformer_xai import notebook as nb
from conformer_xai.synthetic import SOUND_CLASS_NAMES

SOUNDS = nb.examples_dir() / "sounds"
OUT_DIR = nb.work_folder(OUT_DIR, prefix="conformer_xai_06_")  # None: removed with the kernel
torch.manual_seed(0)

# %% [markdown]
# ## A checkpoint as the fork's training script writes it
#
# `torch.save` of a dict holding the run's `args` Namespace: plain `weights_only=True`
# loading refuses it, conformer-xai allows `argparse.Namespace` (and nothing else new).
# The weights are the embedded `conformer_micro_audio`'s, so the predictions and maps below
# mean something; pass your own file as `CHECKPOINT`.

# %%
CLASS_NAMES = None
if CHECKPOINT is None:
    net = cx.load_model("conformer_micro_audio", weights="embedded")
    args = argparse.Namespace(model="conformer_micro_audio", nb_classes=net.num_classes,
                              input_size=224, data_set="SPECTRO", apply_padding=True)
    CHECKPOINT = OUT_DIR / "checkpoint.pth"
    torch.save({"model": net.state_dict(), "model_ema": net.state_dict(),
                "optimizer": {}, "lr_scheduler": {}, "epoch": 0, "args": args}, CHECKPOINT)
    CLASS_NAMES = list(SOUND_CLASS_NAMES)
model = cx.load_model(checkpoint=CHECKPOINT, size_mismatch=SIZE_MISMATCH, device=DEVICE)
if CLASS_NAMES is None:
    CLASS_NAMES = [f"class {i}" for i in range(model.num_classes)]
print(f"{model.model_name}: depth {model.depth}, {model.num_heads} heads, "
      f"width {model.embed_dim}, {model.num_classes} classes, {model.in_chans} input channel(s), "
      f"size mismatch: {model.size_mismatch}")

# %% [markdown]
# ## A wav through the fork's front end
#
# The bundled clip (`examples/sounds/clip_000.wav`, 4.47 s: 448 frames, a 224 x 224 input)
# is a generated sound scene: coloured noise, a mains hum, distractor bursts, and a harmonic
# buzz that starts with a short high marker. Only the marker tells `buzz_high_tag` from
# `buzz_low_tag`. `cx.load_audio` returns the model input (dB, not normalised,
# `(1, C, 224, T'/2)`), the folded image scaled to [0, 1] for drawing, and
# (`with_meta=True`) the settings and the fold, which the explanation keeps so that its maps
# can be unfolded.

# %%
MASKS = None
if WAV is None:
    WAV = SOUNDS / "clip_000.wav"
    entry = next(e for e in json.loads((SOUNDS / "sounds.json").read_text())["clips"]
                 if e["audio"] == WAV.name)
    MASKS = {"event": np.asarray(Image.open(SOUNDS / entry["object_mask"])) > 127,
             "marker": np.asarray(Image.open(SOUNDS / entry["part_mask"])) > 127}
    print(f"true class: {entry['class_name']}")
x, folded, meta = cx.load_audio(WAV, model, with_meta=True)
fold = meta["fold"]
print(f"{Path(WAV).name}: {meta['audio']['seconds']:.2f} s, {fold['frames']} frames -> model input "
      f"{tuple(x.shape)}")

# %% [markdown]
# ## Explain, then read the maps on the time-frequency plane
#
# The explanation stores `meta["fold"]`; `exp.unfolded(...)` gives any map as
# (mel band, frame), and `cx.plot.spectrogram_figure` draws the log-mel spectrogram,
# per-branch Grad-CAM at a shallow block (a third of the depth) and the last block,
# rollout, gradient rollout, the head-by-branch matrix, and the importance of each branch
# over time and over frequency.

# %%
with cx.Explainer(model, class_names=CLASS_NAMES) as explainer:
    exp = explainer.explain(x.to(DEVICE), head=("fused", "cnn", "transformer"),
                            methods=("gradcam", "rollout", "grad_rollout"),
                            image=folded[None, :, :, None], meta=meta)
top = exp.top_classes("fused", k=3)[0]
print("prediction (fused head): "
      + ", ".join(f"{exp.class_name(i)} {p:.1%}" for i, p in top))
cx.plot.spectrogram_figure(exp)

# %% [markdown]
# ## Where the branches look, and where the sound is
#
# Each map unfolded to (mel band, frame): the time and the frequency it weighs most, and
# (for the bundled clip, whose ground truth is known) the share of its energy on the
# deciding event and on the marker, next to the share of the plane those cover (what a
# map spread evenly would get).

# %%
seconds_per_frame = fold["hop_length"] / fold["sr"]
centres = cx.audio.band_centres(meta["audio"])
if MASKS is not None:
    on_event = f"energy on the event ({MASKS['event'].mean():.0%} of the plane)"
    on_marker = f"on the marker ({MASKS['marker'].mean():.1%})"
rows = []
maps = [("gradcam", branch, model.depth, "fused") for branch in ("cnn", "transformer")]
maps += [("rollout", "transformer", None, None), ("grad_rollout", "transformer", None, "fused")]
for method, branch, block, head in maps:
    tf = exp.unfolded(method, branch, block, head=head)[0]  # (mel band, frame)
    tf = np.nan_to_num(np.asarray(tf, dtype=np.float64))
    over_time, over_freq = tf.mean(0), tf.mean(1)
    row = {"map": f"{method} {branch}{'' if block is None else f' block {block}'}",
           "most important time": f"{int(over_time.argmax()) * seconds_per_frame:.2f} s",
           "most important frequency": f"{centres[int(over_freq.argmax())]:.0f} Hz"}
    if MASKS is not None:
        energy = tf - tf.min()
        total = energy.sum() or 1.0
        row[on_event] = f"{energy[MASKS['event']].sum() / total:.0%}"
        row[on_marker] = f"{energy[MASKS['marker']].sum() / total:.0%}"
    rows.append(row)
display(nb.markdown_table(rows, list(rows[0])))

# %% [markdown]
# ## With the command line
#
#     conformer-xai explain examples/sounds/clip_000.wav --out out/
#
# explains a wav with the embedded `conformer_micro_audio` (the default for audio inputs
# when no `--model` or `--checkpoint` is given), writing the same figure and a JSON summary
# (with the probabilities, the audio settings and the fold). With your own checkpoint:
# `conformer-xai explain clip.wav --checkpoint checkpoint.pth --size-mismatch resize`.
# `--audio-config settings.json` changes any front-end setting (torchlibrosa's names) and
# `--frames 448` pads or crops clips to 224 x 224 as the fork's `apply_padding` does. A raw
# `.npy` spectrogram in dB is fed as it is. `conformer-xai evaluate --audio` scores every
# method against the sound scenes' masks.
