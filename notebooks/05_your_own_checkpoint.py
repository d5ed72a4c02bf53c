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
# # 05 · Your own checkpoint: a 3-class Conformer on 1-channel, non-square spectrograms
#
# Users bring fine-tuned Conformers that look nothing like ImageNet models: one input
# channel, non-square inputs (log-mel spectrograms, say 1 x 64 x T), three classes. This
# notebook makes such a checkpoint and then uses it exactly as a user with their own file
# would:
#
# 1. generate log-mel-like spectrograms of three kinds of synthetic animal "calls"
#    (rising chirps, harmonic stacks, broadband click trains) over noise, and save them as
#    `.npy` files;
# 2. adapt the small embedded Conformer to 1 channel and 3 classes
#    (`cx.load_model(..., in_chans=1, num_classes=3, new_head=True)`: the stem's RGB filters
#    are summed into one channel, the heads start fresh) and fine-tune it for about a
#    minute;
# 3. save the state dict with `torch.save`, then load it back with nothing but the file:
#    `cx.load_model("conformer_micro_patch16", checkpoint=path)` reads the 3 classes and
#    the 1 input channel from the tensors;
# 4. explain and plot a spectrogram: both branches, every head, rollout, and how much of
#    each map falls on the call.

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
BASE_MODEL = "conformer_micro_patch16"
BASE_WEIGHTS = "embedded"    # "embedded"; or "imagenet" with BASE_MODEL = "conformer_tiny_patch16"
                             # (or another published Conformer; downloaded once)
N_MELS, N_FRAMES = 64, 160   # spectrogram size: both multiples of 32
TRAIN_SECONDS = 60           # fine-tuning time budget ...
TRAIN_STEPS = 400            # ... or this many steps, whichever comes first
BATCH_SIZE = 16
OUT_DIR = None               # where the spectrograms and the checkpoint go; None: a temporary
                             # folder
DEVICE = "cpu"

# %% [markdown]
# The environment variable `CONFORMER_XAI_FAST=1` (set by the test suite) shrinks the
# numbers of images and steps so that the notebook runs in well under a minute; the
# parameters above are the defaults of a normal run.

# %%
# %matplotlib inline
import os
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import display
from matplotlib.figure import Figure

import conformer_xai as cx
from conformer_xai import notebook as nb
from conformer_xai.notebook import CALL_CLASSES

FAST = os.environ.get("CONFORMER_XAI_FAST") == "1"
if FAST:
    TRAIN_STEPS, BATCH_SIZE = 10, 8
N_TRAIN, N_TEST = (48, 12) if FAST else (480, 60)
OUT_DIR = nb.work_folder(OUT_DIR, prefix="conformer_xai_05_")  # None: removed with the kernel
torch.manual_seed(0)
print("output folder:", OUT_DIR)

# %% [markdown]
# ## Synthetic calls on log-mel-like spectrograms
#
# Each spectrogram is `N_MELS` frequency bins by `N_FRAMES` time frames of log energy:
# a coloured noise floor (louder at low frequencies, slowly fluctuating), and one call at a
# random time, frequency and loudness:
#
# * **chirp**: a tone sweeping upwards in frequency, with a weaker parallel track;
# * **harmonic stack**: a steady tone of three to five evenly spaced partials;
# * **clicks**: a train of short broadband pulses.
#
# The call's mask (the bins where it rises above the noise) is kept for scoring the maps.
# The generator is `conformer_xai.notebook.call_spectrogram`; `write_call_split` saves a split.

# %%
rng = np.random.default_rng(0)
examples = [nb.call_spectrogram(rng, label, N_MELS, N_FRAMES) for label in range(3)]
fig = Figure(figsize=(10, 2.4), layout="constrained")
for ax, (spec, mask), name in zip(fig.subplots(1, 3), examples, CALL_CLASSES):
    ax.imshow(spec, aspect="auto", cmap="magma")
    ax.contour(mask, levels=[0.5], colors="cyan", linewidths=0.6)
    ax.set_title(name, fontsize=9)
    ax.set_xlabel("frame")
fig.axes[0].set_ylabel("mel bin (high at the top)")
display(fig)

# %% [markdown]
# Save them as `.npy` files, as a user's dataset would be. A `.npy` array is a raw model
# input by default (fed as it is, see notebook 06); here the embedded model was trained on
# images, so the arrays are read as grayscale images with `as_image=True` (min-max scaled
# to [0, 1], then normalised with the model's mean and std), and the training tensors
# below come from exactly the same preprocessing as the explanation at the end.
# `crop=False` with `input_size=(N_MELS, N_FRAMES)` keeps the non-square shape.

# %%
SPECTROGRAMS = OUT_DIR / "spectrograms"
train_files, _ = nb.write_call_split(SPECTROGRAMS / "train", N_TRAIN, 1, N_MELS, N_FRAMES)
# the test split's call masks are kept for scoring the maps
test_files, test_masks = nb.write_call_split(SPECTROGRAMS / "test", N_TEST, 2, N_MELS, N_FRAMES)
print(f"{len(train_files)} training and {len(test_files)} test spectrograms in {SPECTROGRAMS}")

# %% [markdown]
# ## Adapt the embedded Conformer: 1 channel, 3 classes
#
# `in_chans=1` sums the stem's RGB filters into one (timm's `adapt_input_conv`);
# `num_classes=3` with `new_head=True` skips the checkpoint's 10-class heads and starts
# new ones (a `WeightsWarning` names the skipped keys).

# %%
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model = cx.load_model(BASE_MODEL, weights=BASE_WEIGHTS, in_chans=1, num_classes=3,
                          new_head=True, device=DEVICE)
for w in caught:
    print(f"{w.category.__name__}: {w.message}")
print("stem:", tuple(model.conv1.weight.shape),
      "· heads:", tuple(model.conv_cls_head.weight.shape), tuple(model.trans_cls_head.weight.shape))

AS_IMAGE = {"input_size": (N_MELS, N_FRAMES), "crop": False, "as_image": True}
x_train, y_train = nb.load_batch(train_files, model, DEVICE, **AS_IMAGE)
x_test, y_test = nb.load_batch(test_files, model, DEVICE, **AS_IMAGE)
print("training tensor:", tuple(x_train.shape))

# %% [markdown]
# ## Fine-tune for about a minute
#
# Conformer is trained, as in the paper, with a cross-entropy loss on each head (CNN and
# transformer) and predicts with their sum. Plain AdamW, a fixed learning rate, random
# time shifts as augmentation.

# %%
optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
generator = torch.Generator().manual_seed(0)
print(f"before fine-tuning: test accuracy {nb.accuracy(model, x_test, y_test):.0%} (chance 33%)")
started, step, losses = time.perf_counter(), 0, []
while step < TRAIN_STEPS and time.perf_counter() - started < TRAIN_SECONDS:
    model.train()
    idx = torch.randint(0, len(x_train), (BATCH_SIZE,), generator=generator)
    xb = torch.roll(x_train[idx], int(torch.randint(-20, 21, (1,), generator=generator)), dims=-1)
    cnn_logits, transformer_logits = model.forward_branches(xb)
    loss = (F.cross_entropy(cnn_logits, y_train[idx])
            + F.cross_entropy(transformer_logits, y_train[idx]))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
    step += 1
model.eval()
test_accuracy = nb.accuracy(model, x_test, y_test)
print(f"{step} steps in {time.perf_counter() - started:.0f} s; "
      f"last loss {np.mean(losses[-5:]):.3f}; test accuracy {test_accuracy:.0%}")

# %% [markdown]
# ## Save the checkpoint, then load it as a user would
#
# A plain state dict saved with `torch.save`. Loading needs only the architecture's name
# and the file: the class count and input channels are read from the tensors, and the file
# is read with `torch.load(..., weights_only=True)` (tensors only, no code).

# %%
checkpoint = OUT_DIR / "conformer_micro_calls.pth"
torch.save(model.state_dict(), checkpoint)
print(f"saved {checkpoint.name} ({checkpoint.stat().st_size / 1e6:.1f} MB)")

mine = cx.load_model(BASE_MODEL, checkpoint=checkpoint, device=DEVICE)
print("loaded:", mine.weights_source, "· classes:", mine.num_classes, "· input channels:",
      mine.conv1.in_channels)
assert mine.num_classes == 3 and mine.conv1.in_channels == 1
with torch.no_grad():
    assert torch.allclose(mine(x_test), model(x_test), atol=1e-5)

# %% [markdown]
# ## Explain a spectrogram
#
# From here on everything is what a user does with their own file: load the checkpoint
# (above), read a spectrogram with `cx.load_image(path, model, input_size=..., crop=False,
# as_image=True)`,
# explain with both classifier heads, plot. Token grids are non-square here
# (4 x 10 patches for 64 x 160 with patch 16).

# %%
index = next(i for i, (_, label) in enumerate(test_files) if label == 0)  # the first chirp
path, label = test_files[index]
x, shown = cx.load_image(path, mine, **AS_IMAGE)
with cx.Explainer(mine, class_names=list(CALL_CLASSES)) as explainer:
    exp = explainer.explain(x.to(DEVICE), target=label, head=("fused", "cnn", "transformer"),
                            methods=("features", "gradcam", "rollout", "grad_rollout"),
                            image=shown[None])
print(f"{path.name}: explained {exp.class_name(label)}; "
      + ", ".join(f"{h} p = {exp.probs[h][0, label]:.2f}" for h in exp.logits))

# %%
display(cx.plot.block_strip(exp, "gradcam", "cnn", head="cnn", ncols=6))
display(cx.plot.block_strip(exp, "gradcam", "transformer", head="transformer", ncols=6))
display(cx.plot.head_branch_matrix(exp))

# %%
fig = Figure(figsize=(11, 2.5), layout="constrained")
panels = [("features · cnn 12", exp.get("features", "cnn", 12)),
          ("features · transformer 12", exp.get("features", "transformer", 12)),
          ("attention rollout", exp.get("rollout", "transformer")),
          ("gradient rollout · fused", exp.get("grad_rollout", "transformer", head="fused"))]
for ax, (title, m) in zip(fig.subplots(1, len(panels)), panels):
    cx.plot.map_panel(m[0], exp.image[0], title=title, colorbar=False, ax=ax)
display(fig)

# %% [markdown]
# ## Which blocks find the call?
#
# The energy-based pointing game against the call's mask over all test spectrograms: for
# every block, Grad-CAM of each head on its own branch, and rollout and gradient rollout
# (one map per model). A map spread evenly would score the call's area (dotted line).
# At 64 x 160 the CNN branch's last block is a 2 x 5 grid and the tokens a 4 x 10 grid, so
# the deepest maps cannot outline a thin call.

# %%
with cx.Explainer(mine) as explainer:
    batch = explainer.explain(x_test, target=y_test, head=("fused", "cnn", "transformer"),
                              methods=("gradcam", "rollout", "grad_rollout"))
blocks = list(range(1, mine.depth + 1))
curves = {f"Grad-CAM · {branch} head on the {branch} branch":
          [batch.get("gradcam", branch, k, head=branch) for k in blocks]
          for branch in ("cnn", "transformer")}
flat = {"attention rollout": batch.get("rollout", "transformer"),
        "gradient rollout (fused head)": batch.get("grad_rollout", "transformer", head="fused")}
# the energy on the call, mean over the spectrograms
curves = {label: [float(cx.metrics.energy_pointing_game(m, test_masks).nanmean()) for m in maps]
          for label, maps in curves.items()}
flat = {label: float(cx.metrics.energy_pointing_game(m, test_masks).nanmean())
        for label, m in flat.items()}
area = float(test_masks.float().mean())

fig = Figure(figsize=(7.5, 3.2), layout="constrained")
ax = fig.add_subplot()
for label, values in curves.items():
    ax.plot(blocks, values, marker="o", label=label)
for (label, value), style in zip(flat.items(), ("--", "-.")):
    ax.axhline(value, color="0.3", ls=style, lw=1, label=label)
ax.axhline(area, color="0.5", ls=":", lw=1, label="uniform map (call area)")
ax.set_xticks(blocks)
ax.set_xlabel("block")
ax.set_ylabel("energy on the call")
ax.grid(alpha=0.3)
ax.legend(fontsize=7)
display(fig)

best = {label: (int(np.argmax(v)) + 1, max(v)) for label, v in curves.items()}
display(nb.MarkdownText(
    f"Over {len(test_files)} test spectrograms (model test accuracy {test_accuracy:.0%}; "
    f"the call covers {area:.1%} of a spectrogram on average): "
    + "; ".join(f"{label} puts most energy on the call at block {k} ({v:.0%})"
                for label, (k, v) in best.items())
    + "; " + ", ".join(f"{label} {v:.0%}" for label, v in flat.items()) + "."))

# %% [markdown]
# ## With the command line
#
# The same checkpoint works with the CLI; `--array-as-image` reads the `.npy` as this
# notebook did (without it, arrays are fed raw):
#
#     conformer-xai explain spectrograms/test/0000_chirp.npy --model conformer_micro_patch16 \
#         --checkpoint conformer_micro_calls.pth --array-as-image --input-size 64x160 \
#         --no-crop --out out/
#
# With a checkpoint of your own, replace the fine-tuning cells by
# `cx.load_model("<architecture>", checkpoint="<your file>")`.
