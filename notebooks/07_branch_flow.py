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
# # 07 · Branch flow: which branch decided, and how much did each borrow from the other
#
# Conformer's two branches exchange features in every block: FCU down adds the CNN map
# (1x1 conv, average pooling, LayerNorm, GELU) to the tokens before each transformer block,
# and FCU up adds the tokens (1x1 conv, BN, ReLU, nearest upsampling) to the CNN map inside
# the next CNN block. Rollout sees only attention, Grad-CAM only one tap at a time; neither
# says where the evidence went.
#
# `lrp` follows the relevance of the target logit backwards through *every* path of the
# model (conservative propagation, Ali et al., ICML 2022: attention weights and
# LayerNorm's `1/sigma` held constant, the GELU gate held constant, ReLU passed, the
# epsilon rule on convolutions and linear layers, batch norm passed, residual additions
# and both FCUs split in proportion to their inputs' contributions). It is conservative:
# what reaches the input is the logit, less what the biases absorbed. Because the flow is
# conserved, it can be *accounted for*: the branch-flow table says, per block, how much
# relevance stays on each branch, how much crosses through each FCU, and how much the
# biases absorbed. `attnlrp` (Achtibat et al., ICML 2024) is the second variant.

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
MODEL_WEIGHTS = "embedded"  # "embedded" (small model trained on synthetic scenes), "imagenet"
                            # (published weights, downloaded once), "random", or the path of a
                            # Conformer checkpoint (.pth / .pt / .safetensors)
CONFORMER_NAME = "conformer_small_patch16"  # architecture for "imagenet" and checkpoints
IMAGE = None      # an image file; None: a generated benchmark scene (embedded / random) or
                  # examples/photos/chelsea.png (imagenet)
SCENE_INDEX = 8   # benchmark scene used when IMAGE is None (8: a red-headed bird)
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

import conformer_xai as cx
from conformer_xai import notebook as nb
from conformer_xai.data import class_names_for
from conformer_xai.synthetic import SyntheticScenes

FAST = os.environ.get("CONFORMER_XAI_FAST") == "1"
N_SCENES = 4 if FAST else 24  # scenes for the branch-share summary
_ = torch.manual_seed(0)

# %%
SYNTHETIC = MODEL_WEIGHTS in nb.SYNTHETIC_WEIGHTS
name = "conformer_micro_patch16" if SYNTHETIC else CONFORMER_NAME
model = nb.load_weights(name, MODEL_WEIGHTS, DEVICE)
print(model.model_name, "weights:", model.weights_source)

# %%
image_path, scene = nb.choose_image(IMAGE, MODEL_WEIGHTS, SCENE_INDEX, nb.work_folder())
print("image:", image_path.name,
      "" if scene is None else f"(ground truth: {scene.class_name}; object and part masks known)")

# %% [markdown]
# ## One explanation with `lrp`, `attnlrp`, TransCAM and Grad-CAM
#
# `lrp` and `attnlrp` each run one modified backward per head in a pass of their own (their
# backward differs from the plain gradient, so they cannot share the Grad-CAM pass). The
# explanation keeps the pixel relevance (`lrp/<head>`, signed in `raw`, its positive part
# in `maps`), the relevance at every tap of both branches (`lrp/<head>/<branch>/<k>`) and
# the branch-flow table (`exp.flows[head]`).

# %%
x, shown = cx.load_image(image_path, model)
x = x.to(DEVICE)
with cx.Explainer(model, class_names=class_names_for(model)) as explainer:
    exp = explainer.explain(x, head=("fused", "cnn", "transformer"),
                            methods=["lrp", "attnlrp", "transcam", "gradcam"], image=shown[None])
print("target:", exp.class_name(int(exp.target[0])))

# %% [markdown]
# ### Conservation
#
# The input relevance of each head, against its target logit. What is missing was absorbed
# by the biases (batch norm shifts, linear and convolution biases, the class token) and by
# the epsilon stabiliser; `attnlrp`'s softmax rule absorbs more by design. On a Conformer
# with zero biases and class token the ratio is 1 (the test suite checks it within 5 %).

# %%
rows = []
for variant in ("lrp", "attnlrp"):
    for head, c in exp.meta[f"{variant}_conservation"].items():
        rows.append({"variant": variant, "head": head, "target logit": c["logit"][0],
                     "input relevance": c["relevance"][0], "ratio": c["ratio"][0],
                     "absorbed share": c["absorbed_share"][0]})
display(nb.markdown_table(
    rows, ["variant", "head", "target logit", "input relevance", "ratio", "absorbed share"]))

# %% [markdown]
# ### The branch-flow table (fused head)
#
# Read from block 12 (next to the head) down to block 1. Per block: `cnn_in` and
# `transformer_in` enter the block from above on each lane; `fcu_up` is the relevance that
# reached the CNN (fusion) block through FCU up, i.e. came from the tokens; `fcu_down` the
# relevance that reached the transformer block through FCU down, i.e. came from the CNN
# map; `cnn_stays` / `transformer_stays` leave the block on their own lane; `absorbed` went
# to biases. Each row adds up: stays + crossings + absorbed = cnn_in + transformer_in.
# Values are in logit units; the shares of the target logit are in the figure below.

# %%
fields = ["block", "cnn_in", "transformer_in", "cnn_stays", "transformer_stays",
          "fcu_down", "fcu_up", "absorbed"]
flow = [{f: (r[f] if f == "block" else r[f][0]) for f in fields} for r in exp.flows["fused"]]
for r in flow:
    assert abs(sum(r[f] for f in fields[3:]) - r["cnn_in"] - r["transformer_in"]) < 1e-3
display(nb.markdown_table(flow[::-1], fields))

# %% [markdown]
# ### The flow as two lanes
#
# `cx.plot.branch_flow` draws the table: the CNN lane on top, the transformer lane below,
# each segment as thick as the relevance it carries; the arrows at each block are the FCU
# crossings, the grey numbers what the block absorbed.

# %%
for head in exp.flows:
    display(cx.plot.branch_flow(exp, head=head))

# %% [markdown]
# ## Where the relevance is: per block, and at the input
#
# The relevance at every tap, as Grad-CAM's grid shows it: CNN taps at each block's
# output, transformer taps at each block's input tokens (the class token's relevance is
# not drawn). Then the input-resolution maps side by side: LRP, AttnLRP, TransCAM (the CNN
# head's CAM refined by the summed attention) and Grad-CAM at the last CNN block.

# %%
display(cx.plot.block_strip(exp, "lrp", "cnn", head="fused"))
display(cx.plot.block_strip(exp, "lrp", "transformer", head="fused"))

# %%
from matplotlib.figure import Figure

fig = Figure(figsize=(12, 3.4), layout="constrained")
axes = fig.subplots(1, 4)
panels = [("LRP · fused", exp.get("lrp", head="fused")),
          ("AttnLRP · fused", exp.get("attnlrp", head="fused")),
          ("TransCAM", exp.get("transcam", "cnn")),
          ("Grad-CAM · cnn 12 · fused", exp.get("gradcam", "cnn", 12, head="fused"))]
for ax, (title, m) in zip(axes, panels):
    cx.plot.map_panel(m[0], shown, title=title, ax=ax, colorbar=False)
display(fig)

# %% [markdown]
# ## Which branch carries the decision? Over several scenes
#
# At the stem, relevance enters the network through two input paths: the CNN branch's
# first block (`conv_1`) and the transformer's patch embedding. Block 1's `cnn_stays` and
# `transformer_stays` are what each path carries; their shares (signed: a path can carry
# net negative evidence) are `exp.meta["branch_share"]`, and `conformer-xai explain`
# prints them. Here, per head, the median over benchmark scenes.

# %%
if SYNTHETIC:
    data = SyntheticScenes(N_SCENES, seed=1, split="test")
    items = [data[i] for i in range(N_SCENES)]
    xs = torch.stack([it["image"] for it in items]).to(DEVICE)
    labels = torch.tensor([it["label"] for it in items], device=DEVICE)
    with cx.Explainer(model) as explainer:
        many = explainer.explain(xs, target=labels, head=("fused", "cnn", "transformer"),
                                 methods=["lrp"], blocks=[12], upsample=False)
    rows = []
    for head, shares in many.meta["branch_share"].items():
        cnn = np.array([s["cnn"] for s in shares])
        ratio = np.array(many.meta["lrp_conservation"][head]["ratio"])
        crossings = np.array([[r["fcu_down"][i] + r["fcu_up"][i] for r in many.flows[head]]
                              for i in range(N_SCENES)]).sum(1)
        logit = np.array(many.meta["lrp_conservation"][head]["logit"])
        rows.append({"head": head, "CNN path share (median)": float(np.median(cnn)),
                     "patch-embedding share (median)": float(np.median(1 - cnn)),
                     "FCU crossings / logit (median)": float(np.median(crossings / logit)),
                     "conservation ratio (median)": float(np.median(ratio))})
    display(nb.markdown_table(rows, list(rows[0])))
else:
    print("the summary over scenes needs the synthetic-scene models "
          "(MODEL_WEIGHTS embedded or random)")
