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
# # 04 · Branch comparison on the ground-truth benchmark: agreement, faithfulness, localisation
#
# The benchmark's scenes come with object and part masks, so explanations can be scored
# instead of admired:
#
# * **agreement** between Conformer's two branches, block by block (Spearman rank
#   correlation and top-10 % IoU of the maps, `cx.metrics.spearman` / `topk_iou`);
# * **faithfulness** (Petsiuk et al. 2018, RISE): deletion AUC (remove the most relevant
#   pixels first; lower is better) and insertion AUC (restore them into a blurred image;
#   higher is better), `cx.metrics.deletion_auc` / `insertion_auc`;
# * **localisation**: the pointing game (Zhang et al. 2016: does the map's maximum fall on
#   the object?) and the energy-based pointing game (Wang et al. 2020: the share of the
#   map's energy on the object), plus the part / body / off shares on the bird scenes.
#
# Models: the CNN model, Conformer (both branches) and the transformer model trained on
# the same scenes. Conformer's maps explain the fused prediction unless said otherwise.
# `conformer-xai evaluate` computes the same metrics over any number of scenes.

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
MODEL_WEIGHTS = "embedded"  # "embedded" or "random": models of the synthetic scene classes
N_IMAGES = 8   # benchmark scenes (4 to 10: the first classes plus the two bird classes)
STEPS = 50     # steps of the deletion and insertion curves
SEED = 0       # seed of the benchmark scenes (test split)
DEVICE = "cpu"

# %% [markdown]
# The environment variable `CONFORMER_XAI_FAST=1` (set by the test suite) shrinks the
# numbers of images and steps so that the notebook runs in well under a minute; the
# parameters above are the defaults of a normal run.

# %%
# %matplotlib inline
import os

import numpy as np
import torch
from IPython.display import display
from matplotlib.figure import Figure

import conformer_xai as cx
from conformer_xai import notebook as nb
from conformer_xai.synthetic import CLASS_NAMES, PART_LABELS, SyntheticScenes

FAST = os.environ.get("CONFORMER_XAI_FAST") == "1"
if FAST:
    N_IMAGES, STEPS = 4, 8
if MODEL_WEIGHTS not in nb.SYNTHETIC_WEIGHTS:
    raise ValueError("this notebook scores maps on the synthetic benchmark: MODEL_WEIGHTS must "
                     "be 'embedded' (or 'random' for a baseline), got " + repr(MODEL_WEIGHTS))
if not 4 <= N_IMAGES <= 10:
    raise ValueError(f"N_IMAGES must be between 4 and 10, got {N_IMAGES}")
_ = torch.manual_seed(0)

# %%
MODEL_NAMES = {"cnn": "resnet_micro", "conformer": "conformer_micro_patch16",
               "transformer": "deit_micro_patch16"}
models = {role: cx.load_model(name, weights=MODEL_WEIGHTS, device=DEVICE)
          for role, name in MODEL_NAMES.items()}

indices = list(range(N_IMAGES - 2)) + [8, 9]  # classes 0.. and the two bird classes
data = SyntheticScenes(max(indices) + 1, seed=SEED, split="test")
items = [data[i] for i in indices]
x = torch.stack([it["image"] for it in items]).to(DEVICE)
labels = torch.tensor([it["label"] for it in items])
object_masks = torch.stack([it["object_mask"] for it in items])
part_masks = torch.stack([it["part_mask"] for it in items])
pixels = torch.stack([it["pixels"] for it in items])
has_part = torch.tensor([it["label"] in PART_LABELS for it in items])
print("scenes:", ", ".join(f"{i}: {CLASS_NAMES[int(label)]}" for i, label in zip(indices, labels)))

# %% [markdown]
# ## One explanation pass per model
#
# Each model explains every scene's *true* class. Conformer is explained for all three
# heads (the branch comparisons use the fused head).

# %%
METHODS = {"cnn": ("features", "gradcam"), "conformer": ("features", "gradcam", "rollout"),
           "transformer": ("features", "gradcam", "rollout")}
explanations, heads, accuracy = {}, {}, {}
for role, model in models.items():
    with cx.Explainer(model, class_names=list(CLASS_NAMES)) as explainer:
        heads[role] = explainer.heads
        explanations[role] = explainer.explain(x, target=labels, head=explainer.heads,
                                               methods=METHODS[role], image=pixels)
    logits = explanations[role].logits[heads[role][0]]
    accuracy[role] = float((logits.argmax(1) == labels).float().mean())
display(nb.MarkdownText("Top-1 accuracy on these scenes: " + ", ".join(
    f"{MODEL_NAMES[r]} {a:.0%}" for r, a in accuracy.items())))

# %% [markdown]
# ## 1. Agreement between Conformer's branches, block by block
#
# Both branches see the same image in every block and exchange features through the
# coupling units. Do their maps agree? Spearman ρ and the IoU of the top 10 % pixels
# between the CNN branch's and the transformer branch's map of the same block, averaged
# over the scenes.

# %%
conf = explanations["conformer"]
blocks = conf.blocks("features", "cnn")
agreement = {}
for method, head in (("features", None), ("gradcam", "fused")):
    rho, iou = [], []
    for k in blocks:
        a = conf.get(method, "cnn", k, head=head)
        b = conf.get(method, "transformer", k, head=head)
        rho.append(float(cx.metrics.spearman(a, b).nanmean()))
        iou.append(float(cx.metrics.topk_iou(a, b, k=0.1).mean()))
    agreement[method] = (rho, iou)

fig = Figure(figsize=(8.5, 3.0), layout="constrained")
ax_rho, ax_iou = fig.subplots(1, 2)
for method, (rho, iou) in agreement.items():
    ax_rho.plot(blocks, rho, marker="o", label=cx.plot.METHOD_LABELS[method])
    ax_iou.plot(blocks, iou, marker="o", label=cx.plot.METHOD_LABELS[method])
for ax, what in ((ax_rho, "Spearman ρ"), (ax_iou, "top-10 % IoU")):
    ax.set_xlabel("block")
    ax.set_ylabel(what)
    ax.set_xticks(blocks)
    ax.grid(alpha=0.3)
ax_rho.axhline(0, color="0.5", lw=0.8)
ax_iou.legend(fontsize=8)
fig.suptitle("Conformer: CNN branch vs transformer branch, same block (fused head for Grad-CAM)",
             fontsize=10)
display(fig)

# %%
rows = [{"block": k, "features ρ": agreement["features"][0][i],
         "features IoU": agreement["features"][1][i], "Grad-CAM ρ": agreement["gradcam"][0][i],
         "Grad-CAM IoU": agreement["gradcam"][1][i]} for i, k in enumerate(blocks)]
display(nb.markdown_table(
    rows, ["block", "features ρ", "features IoU", "Grad-CAM ρ", "Grad-CAM IoU"], digits=2))
best = max(rows, key=lambda r: r["features ρ"])
worst = min(rows, key=lambda r: r["features ρ"])
display(nb.MarkdownText(
    f"On these {N_IMAGES} scenes the branches' feature maps agree most at block "
    f"{best['block']} (ρ = {best['features ρ']:.2f}) and least at block {worst['block']} "
    f"(ρ = {worst['features ρ']:.2f})."))

# %% [markdown]
# The same comparison across models: Conformer's CNN branch against the CNN model and its
# transformer branch against the transformer model, for one scene (`cx.plot.compare`;
# models of different depth are paired by relative depth, ρ in each column title).

# %%
SHOWN = len(indices) - 2  # the first bird scene
display(cx.plot.compare(explanations["cnn"].select(SHOWN), conf.select(SHOWN), method="features",
                        branch="cnn"))
display(cx.plot.compare(explanations["transformer"].select(SHOWN), conf.select(SHOWN),
                        method="features", branch="transformer"))

# %% [markdown]
# ## 2. Faithfulness: deletion and insertion
#
# For each model and branch, the last block's feature map and Grad-CAM, and rollout for the
# transformers, plus a **random map** as the baseline every method should beat. The score
# is the softmax probability of the true class from the head the map explains (the fused
# head for Conformer's maps, the only head otherwise). Deletion replaces pixels by the mean
# colour; insertion starts from a blurred copy. This is the slow part of the notebook:
# `N_IMAGES x (STEPS + 1)` forward passes per map and metric (a few minutes on a laptop
# CPU with the defaults).

# %%
BRANCHES = {"cnn": ("cnn",), "conformer": ("cnn", "transformer"),
            "transformer": ("transformer",)}
LAST = {(role, branch): max(explanations[role].blocks("features", branch))
        for role in models for branch in BRANCHES[role]}  # the last block of each branch
HEAD = {"cnn": "cnn", "conformer": "fused", "transformer": "transformer"}
generator = torch.Generator().manual_seed(SEED)
faithfulness_maps = []  # (role, branch, label, maps)
for role in models:
    e = explanations[role]
    for branch in BRANCHES[role]:
        k = LAST[role, branch]
        faithfulness_maps.append((role, branch, f"feature map {k}",
                                  e.get("features", branch, k)))
        faithfulness_maps.append((role, branch, f"Grad-CAM {k}",
                                  e.get("gradcam", branch, k, head=HEAD[role])))
    if "rollout" in METHODS[role]:
        faithfulness_maps.append((role, "transformer", "attention rollout",
                                  e.get("rollout", "transformer")))
    faithfulness_maps.append((role, "–", "random map", torch.rand(x.shape[0], *x.shape[-2:],
                                                                  generator=generator)))

faithfulness, curves = [], {}
for role, branch, label, maps in faithfulness_maps:
    with cx.Explainer(models[role]) as explainer:
        score = explainer.head_fn(HEAD[role])
        deletion, del_curves = cx.metrics.deletion_auc(score, x, maps, labels, steps=STEPS,
                                                       return_curves=True)
        insertion, ins_curves = cx.metrics.insertion_auc(score, x, maps, labels, steps=STEPS,
                                                         return_curves=True)
    curves[(role, branch, label)] = (del_curves.mean(0), ins_curves.mean(0))
    faithfulness.append({"model": MODEL_NAMES[role], "branch": branch, "map": label,
                         "deletion ↓": float(deletion.mean()),
                         "insertion ↑": float(insertion.mean())})
display(nb.markdown_table(faithfulness, ["model", "branch", "map", "deletion ↓", "insertion ↑"]))

# %%
fig = Figure(figsize=(11.0, 4.2), layout="constrained")
ax_bar, ax_del, ax_ins = fig.subplots(1, 3, width_ratios=(1.3, 1, 1))
names = [f"{MODEL_NAMES[role].split('_')[0]} {'' if branch == '–' else branch} · {label}"
         for role, branch, label, _ in faithfulness_maps]
pos = np.arange(len(names))[::-1]
ax_bar.barh(pos + 0.2, [r["deletion ↓"] for r in faithfulness], 0.4, label="deletion ↓")
ax_bar.barh(pos - 0.2, [r["insertion ↑"] for r in faithfulness], 0.4, label="insertion ↑")
ax_bar.set_yticks(pos, names, fontsize=7)
ax_bar.set_xlabel("AUC")
ax_bar.legend(fontsize=7)
ax_bar.grid(axis="x", alpha=0.3)
fraction = np.linspace(0, 1, STEPS + 1)
for (role, branch, label), (d, i) in curves.items():
    if label.startswith("Grad-CAM") or label == "random map":
        style = ":" if label == "random map" else "-"
        name = f"{MODEL_NAMES[role].split('_')[0]} {branch if label != 'random map' else 'random'}"
        ax_del.plot(fraction, d, style, label=name)
        ax_ins.plot(fraction, i, style, label=name)
ax_del.set_title("deletion (Grad-CAM, last block)", fontsize=9)
ax_ins.set_title("insertion (Grad-CAM, last block)", fontsize=9)
for ax in (ax_del, ax_ins):
    ax.set_xlabel("fraction of pixels")
    ax.set_ylabel("p(true class)")
    ax.grid(alpha=0.3)
ax_ins.legend(fontsize=7)
display(fig)

# %% [markdown]
# ## 3. Localisation: pointing game per block
#
# Cheap to compute, so every block of every branch: the pointing game and the energy-based
# pointing game against the object mask, for the feature maps and Grad-CAM. The x axis is
# the relative depth (block / number of blocks), so that the 8-block ResNet and the
# 12-block models line up.

# %%
localisation = {}  # (role, branch, method) -> (blocks, pg, epg)
for role in models:
    e = explanations[role]
    for branch in BRANCHES[role]:
        for method in ("features", "gradcam"):
            head = HEAD[role] if method == "gradcam" else None
            ks = e.blocks(method, branch, head)
            maps = [e.get(method, branch, k, head=head) for k in ks]
            pg = [float(cx.metrics.pointing_game(m, object_masks).nanmean()) for m in maps]
            epg = [float(cx.metrics.energy_pointing_game(m, object_masks).nanmean())
                   for m in maps]
            localisation[(role, branch, method)] = (ks, pg, epg)

fig = Figure(figsize=(10.0, 6.0), layout="constrained")
axes = fig.subplots(2, 2, sharex=True)
object_share = float(object_masks.float().mean())
for (role, branch, method), (ks, pg, epg) in localisation.items():
    depth = np.array(ks) / max(ks)
    col = 0 if method == "features" else 1
    label = f"{MODEL_NAMES[role]} · {branch}" if role == "conformer" else MODEL_NAMES[role]
    axes[0, col].plot(depth, pg, marker="o", ms=3, label=label)
    axes[1, col].plot(depth, epg, marker="o", ms=3, label=label)
for col, method in enumerate(("features", "gradcam")):
    note = " (fused head for Conformer)" if method == "gradcam" else ""
    axes[0, col].set_title(cx.plot.METHOD_LABELS[method] + note, fontsize=10)
    axes[1, col].axhline(object_share, color="0.4", lw=0.8, ls=":", label="uniform map")
    axes[1, col].set_xlabel("relative depth (block / blocks)")
axes[0, 0].set_ylabel("pointing game")
axes[1, 0].set_ylabel("energy on the object")
for ax in axes.ravel():
    ax.grid(alpha=0.3)
axes[1, 1].legend(fontsize=7)
display(fig)

# %%
rows = []
for role in models:
    e = explanations[role]
    entries = [(branch, method, LAST[role, branch]) for branch in BRANCHES[role]
               for method in ("features", "gradcam")]
    if "rollout" in METHODS[role]:
        entries.append(("transformer", "rollout", None))
    for branch, method, k in entries:
        head = HEAD[role] if method == "gradcam" else None
        m = e.get(method, branch, k, head=head)
        shares = cx.metrics.part_body_off_shares(m[has_part], object_masks[has_part],
                                                 part_masks[has_part])
        rows.append({"model": MODEL_NAMES[role], "branch": branch,
                     "map": cx.plot.METHOD_LABELS[method] + ("" if k is None else f" {k}"),
                     "pointing game": float(cx.metrics.pointing_game(m, object_masks).nanmean()),
                     "energy on object":
                         float(cx.metrics.energy_pointing_game(m, object_masks).nanmean()),
                     "part (birds)": float(shares.part.nanmean()),
                     "body (birds)": float(shares.body.nanmean()),
                     "off (birds)": float(shares.off.nanmean())})
display(nb.markdown_table(rows, list(rows[0]), digits=2))
print(f"uniform-map baseline: energy on object = {object_share:.2f} (the objects' mean area); "
      f"part / body / off shares are over the {int(has_part.sum())} bird scenes")

# %%
text = [f"On these {N_IMAGES} scenes ({STEPS} deletion steps), per model:"]
for role in models:
    name = MODEL_NAMES[role]
    mine = [r for r in faithfulness if r["model"] == name and r["map"] != "random map"]
    chance = next(r for r in faithfulness if r["model"] == name and r["map"] == "random map")
    best = min(mine, key=lambda r: r["deletion ↓"])
    located = max((r for r in rows if r["model"] == name), key=lambda r: r["energy on object"])
    beaten = [r for r in mine if r["deletion ↓"] < chance["deletion ↓"]]
    text.append(
        f"- **{name}**: lowest deletion AUC from the {best['branch']} branch's {best['map']} "
        f"({best['deletion ↓']:.3f}; random map {chance['deletion ↓']:.3f}; {len(beaten)} of "
        f"{len(mine)} maps beat the random map); most energy on the object from the "
        f"{located['branch']} branch's {located['map']} ({located['energy on object']:.0%}).")
text.append("\nWith so few scenes these are indications; `conformer-xai evaluate --n 200` gives "
            "the benchmark's numbers.")
display(nb.MarkdownText("\n".join(text)))
