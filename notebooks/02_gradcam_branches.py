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
# # 02 · Grad-CAM per branch and per classifier head, IntegratedGradients, and an explorer
#
# Conformer has **two branches** (CNN and transformer) and **three classifier heads**: the
# CNN head (average-pooled CNN features), the transformer head (the class token) and the
# fused prediction (their sum). A gradient method explains one head's score on one branch's
# block, so for every block there is a head-by-branch matrix of maps. The CNN head's
# gradient on the transformer branch is the cross-branch evidence that flows through the
# coupling units; the transformer head has no gradient path to the CNN branch's last block
# (that block feeds only the CNN head), so that map is zero by construction.
#
# `cx.Explainer` computes all of it in one forward pass with one `autograd.grad` per head.
# The notebook then puts captum's IntegratedGradients per head beside Grad-CAM, checks our
# Grad-CAM against pytorch-grad-cam's, and ends with an interactive explorer.

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
MODEL_WEIGHTS = "embedded"  # "embedded", "imagenet", "random", or a Conformer checkpoint path
CONFORMER_NAME = "conformer_small_patch16"  # architecture of that checkpoint (paths only)
IMAGE = None      # an image file; None: a generated benchmark scene (or chelsea.png for imagenet)
SCENE_INDEX = 18  # benchmark scene used when IMAGE is None (18: a red-headed bird)
TARGET = None     # class index to explain; None: the fused head's top-1 class
IG_STEPS = 16     # IntegratedGradients steps
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
from conformer_xai.data import class_names_for
from conformer_xai.synthetic import SyntheticScenes

FAST = os.environ.get("CONFORMER_XAI_FAST") == "1"
if FAST:
    IG_STEPS = min(IG_STEPS, 8)
EXPLORER_SCENES = 3 if FAST else 10
_ = torch.manual_seed(0)

# %%
SYNTHETIC = MODEL_WEIGHTS in nb.SYNTHETIC_WEIGHTS  # models of the synthetic scene classes
model = nb.load_weights(nb.model_names(MODEL_WEIGHTS, CONFORMER_NAME)["conformer"],
                        MODEL_WEIGHTS, DEVICE)
class_names = class_names_for(model)
print(model.model_name, "weights:", model.weights_source)

# %%
image_path, scene = nb.choose_image(IMAGE, MODEL_WEIGHTS, SCENE_INDEX, nb.work_folder())
print("image:", image_path.name,
      "" if scene is None else f"(ground truth: {scene.class_name}; object and part masks known)")

# %% [markdown]
# ## Every gradient map in one pass
#
# Four methods of the Grad-CAM family, three heads, two branches, twelve blocks: 288 maps
# from one forward pass and three gradient computations.

# %%
GRADIENT_METHODS = ("gradcam", "gradcam++", "layercam", "hirescam")
x, shown = cx.load_image(image_path, model)
x = x.to(DEVICE)
with cx.Explainer(model, class_names=class_names) as explainer:
    HEADS = explainer.heads
    exp = explainer.explain(x, target=TARGET, head=HEADS, methods=GRADIENT_METHODS,
                            image=shown[None])
target = int(exp.target[0])
print(f"{len(exp.maps)} maps; explained class: {exp.class_name(target)}")
for head in HEADS:
    p = exp.probs[head][0]
    print(f"  {head:12s} p(target) = {p[target]:.3f}   top-1: {exp.class_name(int(p.argmax()))}")

# %% [markdown]
# ## Grad-CAM across all blocks, per head and branch
#
# One strip per (head, branch). Watch in which block each branch's maps settle on the
# object, and note the transformer head's empty panel at the CNN branch's last block (no
# gradient path).

# %%
for head in HEADS:
    for branch in ("cnn", "transformer"):
        display(cx.plot.block_strip(exp, "gradcam", branch, head=head))

# %% [markdown]
# ## The head-by-branch matrix
#
# Rows are classifier heads, columns branches; each row states the head's probability of
# the explained class. The diagonal is the usual reading (each head on its own branch); the
# off-diagonal cells are what no single-branch tool shows: the evidence one head draws from
# the other branch through the coupling units.

# %%
display(cx.plot.head_branch_matrix(exp))
display(cx.plot.head_branch_matrix(exp, block=6))

# %%
rows = []
for k in exp.blocks("gradcam", "cnn"):
    row = {"block": k}
    for branch in ("cnn", "transformer"):
        rho = cx.metrics.spearman(exp.get("gradcam", branch, k, head="cnn")[0],
                                  exp.get("gradcam", branch, k, head="transformer")[0])
        row[f"{branch} branch"] = float(rho)
    rows.append(row)
display(nb.MarkdownText("**Agreement of the CNN head's and the transformer head's Grad-CAM** "
                        "(Spearman rank correlation per block; – where a map is all zero)"))
display(nb.markdown_table(rows, ["block", "cnn branch", "transformer branch"], digits=2))

# %% [markdown]
# ## The Grad-CAM family at a shallow, middle and deep block (fused head)
#
# Grad-CAM weights channels by their mean gradient; Grad-CAM++ by positive second-order
# terms; LayerCAM weights every position by its own positive gradient (finer maps in early
# blocks); HiResCAM multiplies gradients and activations element-wise before summing.

# %%
display(nb.method_rows_figure(exp, GRADIENT_METHODS, "fused", blocks=(4, 8, 12)))

# %% [markdown]
# ## captum's IntegratedGradients per head, beside Grad-CAM
#
# `explainer.head_fn(head)` is a forward function returning one head's logits, which is
# what captum's attribution classes take. IntegratedGradients attributes the score to
# input pixels (baseline: zero after normalisation, the mean colour); Grad-CAM attributes
# it to a block's spatial positions. Each row is one head; the titles give the Spearman
# rank correlation of each Grad-CAM map with the head's IntegratedGradients map.

# %%
from captum.attr import IntegratedGradients

ig_maps = {}
with cx.Explainer(model) as explainer:
    for head in HEADS:
        ig = IntegratedGradients(explainer.head_fn(head))
        attribution = ig.attribute(x, baselines=torch.zeros_like(x), target=target,
                                   n_steps=IG_STEPS, internal_batch_size=IG_STEPS)
        ig_maps[head] = nb.unit_range(attribution.abs().sum(dim=1)[0].detach())

fig = Figure(figsize=(7.2, 2.3 * len(HEADS)), layout="constrained")
axes = fig.subplots(len(HEADS), 3, squeeze=False)
for r, head in enumerate(HEADS):
    cx.plot.map_panel(ig_maps[head], exp.image[0],
                      title=f"IntegratedGradients ({IG_STEPS} steps)", colorbar=False,
                      ax=axes[r, 0])
    axes[r, 0].set_ylabel(f"{head} head", fontsize=9)
    for c, branch in enumerate(("cnn", "transformer"), start=1):
        k = nb.deepest_nonzero_block(exp, "gradcam", branch, head)
        cam = exp.get("gradcam", branch, k, head=head)[0]
        rho = float(cx.metrics.spearman(cam, ig_maps[head]))
        cx.plot.map_panel(cam, exp.image[0], title=f"Grad-CAM {branch} {k} · ρ={rho:.2f}",
                          colorbar=False, ax=axes[r, c])
display(fig)

# %% [markdown]
# ## Same taps as pytorch-grad-cam
#
# `explainer.pytorch_grad_cam` runs any pytorch-grad-cam method on the tap our engine
# reads (with the reshape transform for the tokens), for one head and target. Our one-pass
# Grad-CAM should agree with it up to interpolation details.

# %%
from pytorch_grad_cam import GradCAM

with cx.Explainer(model) as explainer:
    for branch in ("cnn", "transformer"):
        theirs = explainer.pytorch_grad_cam(GradCAM, x, branch, 6, head="cnn", target=target)
        ours = exp.get("gradcam", branch, 6, head="cnn")[0].numpy()
        r = np.corrcoef(ours.ravel(), theirs[0].ravel())[0, 1]
        print(f"{branch:12s} block 6, cnn head: Pearson r with pytorch-grad-cam = {r:.4f}")

# %% [markdown]
# ## Interactive explorer
#
# Pick an image, a classifier head, a branch, a method and a block. Every map of an image
# comes from one explanation computed on first use (all methods, all heads) and cached.
# Attention, rollout and gradient rollout exist only on the transformer branch; rollout
# maps have no block. In a live notebook the controls redraw the map; in a static render
# (HTML, or a headless run) only the figure after the controls is shown, drawn by calling
# the same function once.

# %%
import ipywidgets as widgets

if SYNTHETIC:
    explorer_data = SyntheticScenes(EXPLORER_SCENES, seed=0, split="test")
    explorer_images = {}
    for i in range(EXPLORER_SCENES):
        item = explorer_data[i]
        explorer_images[f"{i}: {item['class_name']}"] = (item["image"][None], item["pixels"])
else:
    explorer_images = {image_path.name: (x.cpu(), torch.from_numpy(shown))}

with cx.Explainer(model) as explainer:
    N_BLOCKS = explainer.num_blocks("cnn")
    explorer = nb.MapExplorer(model, explorer_images, HEADS, explainer.applicable_methods(),
                              class_names=class_names, device=DEVICE)

controls = {
    "image": widgets.Dropdown(options=list(explorer_images), description="image"),
    "head": widgets.Dropdown(options=list(HEADS), value=HEADS[0], description="head"),
    "branch": widgets.Dropdown(options=["cnn", "transformer"], description="branch"),
    "method": widgets.Dropdown(options=list(explorer.methods), value="gradcam",
                               description="method"),
    "block": widgets.IntSlider(min=1, max=N_BLOCKS, value=N_BLOCKS, description="block"),
}
output = widgets.interactive_output(lambda **choice: display(explorer.figure(**choice)), controls)
display(widgets.VBox([widgets.HBox([controls["image"], controls["head"], controls["branch"]]),
                      widgets.HBox([controls["method"], controls["block"]]), output]))

# %%
# the explorer's current view, drawn directly (what a static render shows)
display(explorer.figure(**{name: control.value for name, control in controls.items()}))
