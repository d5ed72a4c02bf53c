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
# # 01 · Feature maps: a CNN, a transformer, and Conformer's two branches
#
# This notebook draws the feature-map figure of the Conformer paper (Peng et al., *Conformer:
# Local Features Coupling Global Representations for Visual Recognition*, ICCV 2021, Fig. 1)
# for any image: (a) the input, then at a shallow and a deep block (b) a CNN model,
# (c) Conformer's CNN branch, (d) a transformer model and (e) Conformer's transformer
# branch. A feature map is a block's output activation averaged over its
# channels (transformer patch tokens reshaped to their grid), drawn in the paper's `jet`
# colour map over the image.
#
# **The paper's reading.** CNN features are *local*: ResNet-101 activates discriminative
# local regions (the peacock's head, its tail). Transformer features are *global*: DeiT-S
# spreads over the image but loses detail. Conformer couples the two in every block
# (feature coupling units: FCU down adds CNN features to the tokens, FCU up adds the tokens
# to the CNN feature maps). The paper reports that, thanks to this coupling, Conformer's CNN
# branch activates the *whole object* rather than a discriminative part, and its
# transformer branch keeps *more local detail* than a plain transformer.
#
# With the default `MODEL_WEIGHTS = "embedded"` the three models are the small ones shipped
# with conformer-xai (`resnet_micro`, `conformer_micro_patch16`, `deit_micro_patch16`),
# trained on procedural scenes whose object and part masks are known. One class design, the
# *birds*, has a large body and a small coloured head that alone decides the class: the
# paper's peacock, made measurable. With `"imagenet"` the notebook uses the paper's models
# (`resnet101`, `conformer_small_patch16`, `deit_small_patch16_224`; downloaded once).

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
MODEL_WEIGHTS = "embedded"  # "embedded" (small models trained on synthetic scenes), "imagenet"
                            # (published weights, downloaded once), "random", or the path of a
                            # Conformer checkpoint (.pth / .pt / .safetensors)
CONFORMER_NAME = "conformer_small_patch16"  # architecture of that checkpoint (paths only)
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

import torch
from IPython.display import display

import conformer_xai as cx
from conformer_xai import notebook as nb
from conformer_xai.synthetic import PART_LABELS, SyntheticScenes

FAST = os.environ.get("CONFORMER_XAI_FAST") == "1"
N_SUMMARY_SCENES = 2 if FAST else 6  # bird scenes for the part / body / off summary
_ = torch.manual_seed(0)

# %%
SYNTHETIC = MODEL_WEIGHTS in nb.SYNTHETIC_WEIGHTS  # models of the synthetic scene classes
MODEL_NAMES = nb.model_names(MODEL_WEIGHTS, CONFORMER_NAME)  # a checkpoint: the Conformer only
models = {role: nb.load_weights(name, MODEL_WEIGHTS, DEVICE) for role, name in MODEL_NAMES.items()}
for role, model in models.items():
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{role:12s} {model.model_name:26s} weights: {model.weights_source:10s} "
          f"{n_params:.2f} M parameters")

# %%
image_path, scene = nb.choose_image(IMAGE, MODEL_WEIGHTS, SCENE_INDEX, nb.work_folder())
print("image:", image_path.name,
      "" if scene is None else f"(ground truth: {scene.class_name}; object and part masks known)")

# %% [markdown]
# ## One forward pass per model
#
# `cx.load_image` applies each model's own preprocessing (its timm data config) and returns
# the crop the model saw. `Explainer.explain` records every block's output in a single
# forward pass; here we ask for the feature maps and, for comparison, Grad-CAM (of the
# fused head for Conformer, the only head otherwise).

# %%
explanations = {model.model_name: nb.explain_image(model, image_path, device=DEVICE)
                for model in models.values()}
for name, exp in explanations.items():
    print(f"{name}\n{cx.plot.top_predictions_text(exp, k=3)}\n")

# %% [markdown]
# ## The paper's figure
#
# Columns follow the paper; the rows are a shallow block (a third of the depth, or the end
# of the second stage for a ResNet) and the last block. `cx.plot.paper_figure` reads each
# model's role from its maps (two branches: the Conformer).

# %%
display(cx.plot.paper_figure(None, explanations))

# %% [markdown]
# The same layout with Grad-CAM instead of raw activations shows where the evidence for
# the predicted class lies, block by block, rather than where the activations are large.

# %%
display(cx.plot.paper_figure(None, explanations, method="gradcam"))

# %% [markdown]
# ## What our models show, in numbers
#
# A figure invites reading too much into one image. With a benchmark scene the object and
# part masks are known, so each panel's energy can be split into three shares (they sum to
# one; `cx.metrics.part_body_off_shares`): on the discriminative **part** (the bird's head),
# on the rest of the **body**, and **off** the object.

# %%
COLUMNS = [("cnn", "cnn"), ("conformer", "cnn"), ("transformer", "transformer"),
           ("conformer", "transformer")]
LABELS = {(role, branch): f"{MODEL_NAMES[role]} ({branch} branch)" if role == "conformer"
          else MODEL_NAMES[role] for role, branch in COLUMNS if role in models}
SHARES = ["model / branch", "block", "part", "body", "off"]

if scene is not None and scene.has_part:
    masks = (torch.from_numpy(scene.object_mask), torch.from_numpy(scene.part_mask))
    columns = [(label, explanations[MODEL_NAMES[role]], branch)
               for (role, branch), label in LABELS.items()]
    display(nb.markdown_table(nb.part_body_off_rows(columns, masks, nb.paper_blocks), SHARES))
else:
    print("The image has no part mask (not a bird scene): no shares to compute.")

# %% [markdown]
# One scene is an anecdote. The next cell repeats the measurement for the last block over
# several bird scenes of the benchmark's test split and states the result in words. It
# needs models of the synthetic classes (`MODEL_WEIGHTS` "embedded" or "random").

# %%
if SYNTHETIC and len(models) == 3:
    bird_indices = [i for i in range(10 * N_SUMMARY_SCENES) if i % 10 in PART_LABELS]
    bird_indices = bird_indices[:N_SUMMARY_SCENES]
    birds = SyntheticScenes(max(bird_indices) + 1, seed=0, split="test")
    items = [birds[i] for i in bird_indices]
    x = torch.stack([it["image"] for it in items]).to(DEVICE)
    masks = (torch.stack([it["object_mask"] for it in items]),
             torch.stack([it["part_mask"] for it in items]))
    batch_exps = {}
    for model in models.values():
        with cx.Explainer(model) as explainer:
            last = {b: [explainer.num_blocks(b)] for b in explainer.branches}
            batch_exps[model.model_name] = explainer.explain(
                x, target=[it["label"] for it in items], methods=("features",), blocks=last)
    columns = [(label, batch_exps[MODEL_NAMES[role]], branch)
               for (role, branch), label in LABELS.items()]
    summary = nb.part_body_off_rows(columns, masks)
    part_area = float(masks[1].float().mean())  # what a uniform map would put on the head
    display(nb.markdown_table(summary, SHARES))
else:
    summary = None
    print("The summary needs the three models of the synthetic scenes.")

# %%
if summary:
    by = {row["model / branch"]: row for row in summary}
    cnn, c_cnn = by[LABELS["cnn", "cnn"]], by[LABELS["conformer", "cnn"]]
    vit, c_vit = by[LABELS["transformer", "transformer"]], by[LABELS["conformer", "transformer"]]
    lines = [f"On these {N_SUMMARY_SCENES} bird scenes, at the last block:"]
    if c_cnn["body"] > cnn["body"]:
        lines.append(
            f"- Conformer's CNN branch puts more of its energy on the bird's body than "
            f"{MODEL_NAMES['cnn']} does ({c_cnn['body']:.0%} against {cnn['body']:.0%}): "
            f"the paper's reading (whole object rather than a part) holds here.")
    else:
        lines.append(
            f"- Conformer's CNN branch does not put more energy on the body than "
            f"{MODEL_NAMES['cnn']} ({c_cnn['body']:.0%} against {cnn['body']:.0%}): the "
            f"paper's reading does not show on these scenes.")
    lines.append(
        f"- On the discriminative head: {MODEL_NAMES['cnn']} {cnn['part']:.1%}, Conformer's "
        f"CNN branch {c_cnn['part']:.1%}; the head covers {part_area:.1%} of the image, "
        f"which is what a uniform map would put there.")
    more = "more" if c_vit["off"] < vit["off"] else "less"
    lines.append(
        f"- Conformer's transformer branch keeps {more} of its energy on the object than "
        f"{MODEL_NAMES['transformer']} ({1 - c_vit['off']:.0%} against {1 - vit['off']:.0%}).")
    lines.append(
        "\nFeature maps (a channel mean) are a coarse reading and the sample is small; "
        "notebook 04 and `conformer-xai evaluate` measure the same on more scenes and methods.")
    display(nb.MarkdownText("\n".join(lines)))

# %% [markdown]
# ## Reading the figure carefully
#
# * The micro models see 128 x 128 scenes: the deep CNN maps are 4 x 4 and the token grids
#   8 x 8, so the last-block panels are coarse by construction (the paper's 224 x 224
#   inputs give 7 x 7 and 14 x 14).
# * A feature map shows where activations are large, not what decided the class: compare
#   with the Grad-CAM figure, and see notebook 02 for every block, head and branch.
# * The statements above are computed from this run's outputs and hold for these scenes
#   and models only; with `MODEL_WEIGHTS = "imagenet"` the same cells draw the paper's own
#   models on a photo.
