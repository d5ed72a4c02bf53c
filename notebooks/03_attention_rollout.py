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
# # 03 · Attention, rollout, gradient rollout: Conformer's transformer branch vs a plain transformer
#
# * **Attention** (per block): the class token's attention to the patches, averaged over
#   the attention heads.
# * **Rollout** (Abnar and Zuidema 2020): fuse the attention heads, add the identity for
#   the residual connection (A' = 0.5 A + 0.5 I, rows renormalised), multiply through the
#   blocks, read the class token's row. Options: head fusion (mean, max, min), discard
#   ratio (drop the weakest weights first), first block.
# * **Gradient rollout** (Chefer et al. 2021): weight each block's attention by the
#   gradient of the target score (ReLU of gradient times attention, averaged over heads),
#   accumulate R = R + Ā R; class-specific, one map per classifier head.
#
# We compare Conformer's transformer branch with the plain transformer model of the same
# size, then look at what rollout cannot see in Conformer: the CNN features that the
# coupling units add to the tokens before every block.

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
MODEL_WEIGHTS = "embedded"  # "embedded", "imagenet", "random", or a Conformer checkpoint path
CONFORMER_NAME = "conformer_small_patch16"  # architecture of that checkpoint (paths only)
IMAGE = None     # an image file; None: a generated benchmark scene (or chelsea.png for imagenet)
SCENE_INDEX = 7  # benchmark scene used when IMAGE is None (7: a wavy cross)
DEVICE = "cpu"

# %% [markdown]
# The environment variable `CONFORMER_XAI_FAST=1` (set by the test suite) shrinks the
# numbers of images and steps so that the notebook runs in well under a minute; the
# parameters above are the defaults of a normal run.

# %%
# %matplotlib inline
import os

import torch
from IPython.display import display
from matplotlib.figure import Figure

import conformer_xai as cx
from conformer_xai import notebook as nb
from conformer_xai.data import class_names_for
from conformer_xai.synthetic import SyntheticScenes

FAST = os.environ.get("CONFORMER_XAI_FAST") == "1"
N_SCENES = 2 if FAST else 8  # benchmark scenes for the rollout-options table
_ = torch.manual_seed(0)

# %%
SYNTHETIC = MODEL_WEIGHTS in nb.SYNTHETIC_WEIGHTS  # models of the synthetic scene classes
MODEL_NAMES = nb.model_names(MODEL_WEIGHTS, CONFORMER_NAME)  # a checkpoint: the Conformer only
roles = [r for r in ("conformer", "transformer") if r in MODEL_NAMES]
models = {MODEL_NAMES[r]: nb.load_weights(MODEL_NAMES[r], MODEL_WEIGHTS, DEVICE) for r in roles}
CONFORMER = MODEL_NAMES["conformer"]
for name, model in models.items():
    print(f"{name:26s} weights: {model.weights_source}")

# %%
image_path, scene = nb.choose_image(IMAGE, MODEL_WEIGHTS, SCENE_INDEX, nb.work_folder())
print("image:", image_path.name,
      "" if scene is None else f"(ground truth: {scene.class_name}; object and part masks known)")

# %%
METHODS = ("attention", "rollout", "grad_rollout", "gradcam")
explanations = {}
for name, model in models.items():
    x, shown = cx.load_image(image_path, model)
    with cx.Explainer(model, class_names=class_names_for(model)) as explainer:
        heads = tuple(h for h in ("fused", "transformer") if h in explainer.heads)
        explanations[name] = explainer.explain(x.to(DEVICE), head=heads, methods=METHODS,
                                               attn_heads=True, image=shown[None])
for name, exp in explanations.items():
    t = int(exp.target[0])
    print(f"{name:26s} explained class: {exp.class_name(t)} "
          f"(p = {exp.probs[exp.heads[0]][0, t]:.2f}, {exp.heads[0]} head)")

# %% [markdown]
# ## Attention block by block
#
# The class token's attention, averaged over attention heads, in every block.

# %%
for exp in explanations.values():
    display(cx.plot.block_strip(exp, "attention", "transformer"))

# %% [markdown]
# Each attention head separately, at the last block (`attn_heads=True` keeps them in
# `exp.raw["attention_heads/transformer/<k>"]`, at token-grid resolution).

# %%
for exp in explanations.values():
    display(nb.attention_heads_figure(exp, max(exp.blocks("attention", "transformer"))))

# %% [markdown]
# ## Rollout, gradient rollout and Grad-CAM
#
# Rollout is class-agnostic (it only multiplies attention); gradient rollout and Grad-CAM
# follow the target's gradient. For Conformer the gradients are those of the fused head,
# and of the transformer head alone.

# %%
rows = {}
for name, exp in explanations.items():
    panels = [("attention rollout", exp.get("rollout", "transformer"))]
    for head in exp.heads:
        panels.append((f"gradient rollout · {head}",
                       exp.get("grad_rollout", "transformer", head=head)))
    k = max(exp.blocks("gradcam", "transformer"))
    panels.append((f"Grad-CAM block {k} · {exp.heads[-1]}",
                   exp.get("gradcam", "transformer", k, head=exp.heads[-1])))
    rows[name] = panels
ncols = max(len(r) for r in rows.values())
fig = Figure(figsize=(2.3 * ncols + 0.6, 2.5 * len(rows)), layout="constrained")
axes = fig.subplots(len(rows), ncols, squeeze=False)
for r, (name, panels) in enumerate(rows.items()):
    for c in range(ncols):
        if c < len(panels):
            title, m = panels[c]
            cx.plot.map_panel(m[0], explanations[name].image[0], title=title, colorbar=False,
                              ax=axes[r, c])
        else:
            axes[r, c].set_axis_off()
    axes[r, 0].set_ylabel(name, fontsize=9)
display(fig)

# %% [markdown]
# ## Head fusion and discard ratio
#
# Rollout's options change the picture a lot: `max` fusion follows the most confident
# attention head, `min` the consensus; discarding the weakest attention weights (per
# block, before the identity is added) sharpens the map. Options go through
# `rollout_options=dict(head_fusion=..., discard_ratio=..., start_block=...)`; the
# attention is recorded once per call, without gradients.

# %%
FUSIONS = ("mean", "max", "min")
DISCARDS = (0.0, 0.5, 0.9)
for model in models.values():
    x, shown = cx.load_image(image_path, model)
    display(nb.rollout_options_figure(model, x.to(DEVICE), shown, FUSIONS, DISCARDS))

# %% [markdown]
# ### Which options localise the object?
#
# On benchmark scenes the object mask is known: the energy-based pointing game
# (`cx.metrics.energy_pointing_game`, the share of the map's energy on the object) and the
# pointing game (does the maximum fall on it?) score each option, averaged over scenes.

# %%
if SYNTHETIC:
    data = SyntheticScenes(N_SCENES, seed=0, split="test")
    items = [data[i] for i in range(N_SCENES)]
    xs = torch.stack([it["image"] for it in items]).to(DEVICE)
    labels = [it["label"] for it in items]
    object_masks = torch.stack([it["object_mask"] for it in items])

    rows = []
    for name, model in models.items():
        with cx.Explainer(model) as explainer:
            maps = {}
            for fusion in FUSIONS:
                for discard in DISCARDS:
                    e = explainer.explain(xs, methods=("rollout",), rollout_options={
                        "head_fusion": fusion, "discard_ratio": discard})
                    maps[f"{fusion}, discard {discard:.0%}"] = e.get("rollout", "transformer")
            head = explainer.default_head
            e = explainer.explain(xs, target=labels, methods=("grad_rollout",), head=head)
            maps[f"gradient rollout ({head} head)"] = e.get("grad_rollout", "transformer")
        for label, m in maps.items():
            energy = cx.metrics.energy_pointing_game(m, object_masks).nanmean()
            pointing = cx.metrics.pointing_game(m, object_masks).nanmean()
            rows.append({"model": name, "rollout": label, "energy on object": float(energy),
                         "pointing game": float(pointing)})
    display(nb.markdown_table(rows, ["model", "rollout", "energy on object", "pointing game"]))
    best = {name: max((r for r in rows if r["model"] == name),
                      key=lambda r: r["energy on object"]) for name in models}
    display(nb.MarkdownText(
        f"On these {N_SCENES} scenes the highest energy on the object comes from: "
        + "; ".join(f"**{n}**: {r['rollout']} ({r['energy on object']:.0%})"
                    for n, r in best.items()) + "."))
else:
    print("The options table needs the models of the synthetic scenes "
          "(MODEL_WEIGHTS embedded or random).")

# %% [markdown]
# ## What rollout misses in Conformer: the coupling units
#
# Rollout models each block as "attention plus identity" (the residual connection): each
# token after a block is a mixture of the tokens before it. That is a heuristic even for a
# plain ViT (it ignores the values, the norms and the MLPs), but there it accounts for
# every path between tokens: in a ViT, tokens exchange information only through attention.
# Not so in Conformer. In the coupled blocks 2 to 12 the transformer block does not read
# its own tokens only: **FCU down** first adds the CNN branch's features of the same block
# (1x1 conv, average pooling to the token grid, LayerNorm, GELU) to every patch token:
#
#     x_t ← trans_block(x_t + FCU_down(x_cnn))
#
# The CNN branch mixes neighbouring positions with its convolutions (and receives the
# tokens back through FCU up), so information moves between token positions along a path
# that is not attention. Rollout attributes whatever the tokens carry from the CNN branch to
# the token positions themselves, as if it had been there all along. And **FCU up** sends
# the tokens back into the CNN branch, which feeds the CNN head: evidence that rollout,
# reading only the class token's attention, never follows. Gradient methods (Grad-CAM on
# the transformer taps, gradient rollout's gradients) do pass through both units.
#
# How large is that injected signal? Forward hooks on the published module names
# (`conv_trans_k.squeeze_block` is FCU down; `nb.fcu_down_ratios` places them) measure, per
# block, the norm of what FCU down adds to the patch tokens relative to the norm of the
# tokens it is added to.

# %%
conformer = models[CONFORMER]
x, _ = cx.load_image(image_path, conformer)
ratios = nb.fcu_down_ratios(conformer, x.to(DEVICE))

fig = Figure(figsize=(6.0, 2.6), layout="constrained")
ax = fig.add_subplot()
ax.bar(list(ratios), list(ratios.values()), color="tab:orange")
ax.axhline(1.0, color="0.5", lw=0.8, ls="--")
ax.set_xlabel("block")
ax.set_ylabel("‖FCU down‖ / ‖tokens‖")
ax.set_xticks(list(ratios))
ax.set_title(f"{CONFORMER}: CNN features added to the patch tokens before each block",
             fontsize=10)
display(fig)

# %%
lo, hi = min(ratios.values()), max(ratios.values())
display(nb.MarkdownText(
    f"On this image the CNN features that FCU down adds have between {lo:.0%} and {hi:.0%} "
    f"of the norm of the patch tokens they join (blocks 2 to {conformer.depth}). "
    "None of it is visible to attention rollout. One place to look for the consequence: "
    "how well rollout agrees with the gradient-based maps, in the coupled model and in "
    "the plain transformer."))

# %%
rows = []
for exp in explanations.values():
    head = exp.heads[-1]
    rollout = exp.get("rollout", "transformer")[0]
    k = max(exp.blocks("gradcam", "transformer"))
    grad_rollout = exp.get("grad_rollout", "transformer", head=head)[0]
    gradcam = exp.get("gradcam", "transformer", k, head=head)[0]
    rows.append({"model": exp.model_name,
                 "ρ(rollout, gradient rollout)": float(cx.metrics.spearman(rollout, grad_rollout)),
                 f"ρ(rollout, Grad-CAM block {k})": float(cx.metrics.spearman(rollout, gradcam)),
                 "head": head})
display(nb.markdown_table(rows, list(rows[0])))
if len(rows) == 2:
    key = [c for c in rows[0] if c.startswith("ρ(rollout, Grad-CAM")][0]
    conformer_rho, plain_rho = rows[0][key], rows[1][key]
    relation = "less" if conformer_rho < plain_rho else "more"
    display(nb.MarkdownText(
        f"On this image, rollout agrees {relation} with Grad-CAM in {rows[0]['model']} "
        f"(ρ = {conformer_rho:.2f}) than in {rows[1]['model']} (ρ = {plain_rho:.2f})."))

# %% [markdown]
# The table is one image: read it as an illustration, not a finding. The mechanism above
# holds for every input; how much it changes a given map depends on the image and the
# weights. When rollout and the gradient-based maps disagree on Conformer, the gradient
# maps are the ones that account for the coupling.
