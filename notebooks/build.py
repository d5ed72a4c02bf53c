"""Writes the tutorial notebooks of ``notebooks/`` from the cell sources in this file.

The ``.ipynb`` files are what users open; this script is where they are edited, so that the five
notebooks stay consistent (same parameter names, same set-up, no outputs, stable cell ids).
After editing a cell here, run::

    .venv/bin/python notebooks/build.py          # rewrite the notebooks
    .venv/bin/python notebooks/build.py --check  # exit 1 if a notebook differs from this file

``tests/test_notebooks.py`` executes every notebook and checks that the committed files are
exactly what this script writes (without outputs).

Every notebook starts with a parameters cell (tagged ``parameters``, as papermill expects):
``MODEL_WEIGHTS = "embedded"`` by default (the small models trained on synthetic scenes, shipped
in the package), ``"imagenet"`` for the published weights, or the path of a checkpoint; the
image; the device. The environment variable ``CONFORMER_XAI_FAST=1`` (set by the tests) makes
the notebooks use fewer images and steps.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from textwrap import dedent

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE_INFO = {"name": "python", "pygments_lexer": "ipython3"}


def md(text: str) -> tuple[str, str]:
    return "markdown", dedent(text).strip("\n")


def code(text: str, *tags: str) -> tuple[str, str, tuple[str, ...]]:
    return "code", dedent(text).strip("\n"), tags


# ---------------------------------------------------------------------------------- shared cells
FAST_NOTE = md("""
    The environment variable `CONFORMER_XAI_FAST=1` (set by the test suite) shrinks the
    numbers of images and steps so that the notebook runs in well under a minute; the
    parameters above are the defaults of a normal run.
""")

LOAD_MODELS = code('''
    SYNTHETIC = MODEL_WEIGHTS in ("embedded", "random")  # models of the synthetic scene classes
    NAMED_WEIGHTS = MODEL_WEIGHTS in ("embedded", "imagenet", "random")
    if MODEL_WEIGHTS == "imagenet":
        MODEL_NAMES = {"cnn": "resnet101", "conformer": "conformer_small_patch16",
                       "transformer": "deit_small_patch16_224"}
    elif SYNTHETIC:
        MODEL_NAMES = {"cnn": "resnet_micro", "conformer": "conformer_micro_patch16",
                       "transformer": "deit_micro_patch16"}
    else:  # a checkpoint file: only the Conformer, built as CONFORMER_NAME
        MODEL_NAMES = {"conformer": CONFORMER_NAME}


    def load(role):
        """The model of a role ("cnn", "conformer", "transformer") with MODEL_WEIGHTS."""
        if NAMED_WEIGHTS:
            return cx.load_model(MODEL_NAMES[role], weights=MODEL_WEIGHTS, device=DEVICE)
        return cx.load_model(MODEL_NAMES[role], checkpoint=MODEL_WEIGHTS, device=DEVICE)
''')

IMAGE_HELPERS = code('''
    WORK = tempfile.TemporaryDirectory(prefix="conformer_xai_notebook_")  # removed with the kernel


    def benchmark_scene(index):
        """Scene `index` of the benchmark's test split, written to a PNG file as a user's image."""
        scene = SyntheticScenes(index + 1, seed=0, split="test").scene(index)
        path = Path(WORK.name) / f"scene_{index:03d}_{scene.class_name}.png"
        Image.fromarray(scene.image).save(path)
        return path, scene


    if IMAGE is not None:
        image_path, scene = Path(IMAGE), None
    elif MODEL_WEIGHTS == "imagenet":
        root = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "examples").is_dir())
        image_path, scene = root / "examples" / "photos" / "chelsea.png", None
    else:
        image_path, scene = benchmark_scene(SCENE_INDEX)
    print("image:", image_path.name,
          "" if scene is None else f"(ground truth: {scene.class_name}; object and part masks known)")
''')

MARKDOWN_TABLE = code('''
    def table(rows, columns, digits=3):
        """A list of dicts as a Markdown table (pandas is not a dependency of conformer-xai)."""
        def cell(value):
            if isinstance(value, float):
                return "–" if value != value else f"{value:.{digits}f}"
            return "–" if value is None else str(value)

        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
        return Markdown("\\n".join(lines))
''')


def predictions_cell(var: str) -> tuple[str, str, tuple[str, ...]]:
    return code(f'''
        def predictions(exp, k=3):
            """Top-k classes of every classifier head of a one-image explanation."""
            lines = []
            for head in exp.logits:
                top = ", ".join(f"{{exp.class_name(c)}} {{p:.2f}}" for c, p in exp.top_classes(head, k)[0])
                lines.append(f"  {{head:12s}} {{top}}")
            return "\\n".join(lines)


        for name, exp in {var}.items():
            print(f"{{name}} (explained: {{exp.class_name(int(exp.target[0]))}})")
            print(predictions(exp))
    ''')


# ---------------------------------------------------------------------------------- 01
NB01 = [
    md("""
        # 01 · Feature maps: a CNN, a transformer, and Conformer's two branches

        This notebook draws the feature-map figure of the Conformer paper (Peng et al., *Conformer:
        Local Features Coupling Global Representations for Visual Recognition*, ICCV 2021, Fig. 1)
        for any image: (a) the input, then at a shallow and a deep block (b) a CNN model,
        (c) Conformer's CNN branch, (d) a transformer model and (e) Conformer's transformer
        branch. A feature map is a block's output activation averaged over its
        channels (transformer patch tokens reshaped to their grid), drawn in the paper's `jet`
        colour map over the image.

        **The paper's reading.** CNN features are *local*: ResNet-101 activates discriminative
        local regions (the peacock's head, its tail). Transformer features are *global*: DeiT-S
        spreads over the image but loses detail. Conformer couples the two in every block
        (feature coupling units: FCU down adds CNN features to the tokens, FCU up adds the tokens
        to the CNN feature maps). The paper reports that, thanks to this coupling, Conformer's CNN
        branch activates the *whole object* rather than a discriminative part, and its
        transformer branch keeps *more local detail* than a plain transformer.

        With the default `MODEL_WEIGHTS = "embedded"` the three models are the small ones shipped
        with conformer-xai (`resnet_micro`, `conformer_micro_patch16`, `deit_micro_patch16`),
        trained on procedural scenes whose object and part masks are known. One class design, the
        *birds*, has a large body and a small coloured head that alone decides the class: the
        paper's peacock, made measurable. With `"imagenet"` the notebook uses the paper's models
        (`resnet101`, `conformer_small_patch16`, `deit_small_patch16_224`; downloaded once).
    """),
    md("## Parameters"),
    code('''
        MODEL_WEIGHTS = "embedded"  # "embedded" (small models trained on synthetic scenes), "imagenet"
                                    # (published weights, downloaded once), "random", or the path of a
                                    # Conformer checkpoint (.pth / .pt / .safetensors)
        CONFORMER_NAME = "conformer_small_patch16"  # architecture of that checkpoint (paths only)
        IMAGE = None      # an image file; None: a generated benchmark scene (embedded / random) or
                          # examples/photos/chelsea.png (imagenet)
        SCENE_INDEX = 8   # benchmark scene used when IMAGE is None (8: a red-headed bird)
        DEVICE = "cpu"
    ''', "parameters"),
    FAST_NOTE,
    code('''
        %matplotlib inline
        import os
        import tempfile
        from pathlib import Path

        import numpy as np
        import torch
        from IPython.display import Markdown, display
        from PIL import Image

        import conformer_xai as cx
        from conformer_xai.data import class_names_for
        from conformer_xai.synthetic import PART_LABELS, SyntheticScenes

        FAST = os.environ.get("CONFORMER_XAI_FAST") == "1"
        N_SUMMARY_SCENES = 2 if FAST else 6  # bird scenes for the part / body / off summary
        torch.manual_seed(0);
    '''),
    LOAD_MODELS,
    code('''
        models = {role: load(role) for role in MODEL_NAMES}
        for role, model in models.items():
            n_params = sum(p.numel() for p in model.parameters()) / 1e6
            print(f"{role:12s} {model.model_name:26s} weights: {model.weights_source:10s} "
                  f"{n_params:.2f} M parameters")
    '''),
    IMAGE_HELPERS,
    md("""
        ## One forward pass per model

        `cx.load_image` applies each model's own preprocessing (its timm data config) and returns
        the crop the model saw. `Explainer.explain` records every block's output in a single
        forward pass; here we ask for the feature maps and, for comparison, Grad-CAM (of the
        fused head for Conformer, the only head otherwise).
    """),
    code('''
        def explain(model, path, methods=("features", "gradcam"), **kwargs):
            x, shown = cx.load_image(path, model)
            with cx.Explainer(model, class_names=class_names_for(model)) as explainer:
                return explainer.explain(x.to(DEVICE), methods=methods, image=shown[None], **kwargs)


        explanations = {models[role].model_name: explain(models[role], image_path) for role in models}
    '''),
    predictions_cell("explanations"),
    md("""
        ## The paper's figure

        Columns follow the paper; the rows are a shallow block (a third of the depth, or the end
        of the second stage for a ResNet) and the last block. `cx.plot.paper_figure` reads each
        model's role from its maps (two branches: the Conformer).
    """),
    code('''
        cx.plot.paper_figure(None, explanations)
    '''),
    md("""
        The same layout with Grad-CAM instead of raw activations shows where the evidence for
        the predicted class lies, block by block, rather than where the activations are large.
    """),
    code('''
        cx.plot.paper_figure(None, explanations, method="gradcam")
    '''),
    md("""
        ## What our models show, in numbers

        A figure invites reading too much into one image. With a benchmark scene the object and
        part masks are known, so each panel's energy can be split into three shares (they sum to
        one; `cx.metrics.part_body_off_shares`): on the discriminative **part** (the bird's head),
        on the rest of the **body**, and **off** the object.
    """),
    MARKDOWN_TABLE,
    code('''
        COLUMNS = [("cnn", "cnn"), ("conformer", "cnn"), ("transformer", "transformer"),
                   ("conformer", "transformer")]


        def column_label(role, branch):
            name = MODEL_NAMES[role]
            return f"{name} ({branch} branch)" if role == "conformer" else name


        def shares_rows(exps, masks, blocks_of):
            """Part / body / off shares of the feature maps, one row per model branch and block."""
            object_mask, part_mask = masks
            rows = []
            for role, branch in COLUMNS:
                if role not in models:
                    continue
                exp = exps[MODEL_NAMES[role]]
                for k in blocks_of(exp, branch):
                    s = cx.metrics.part_body_off_shares(exp.get("features", branch, k), object_mask,
                                                        part_mask)
                    rows.append({"model / branch": column_label(role, branch), "block": k,
                                 "part": float(s.part.nanmean()), "body": float(s.body.nanmean()),
                                 "off": float(s.off.nanmean())})
            return rows


        def shallow_and_deep(exp, branch):
            return cx.plot.default_blocks(len(exp.blocks("features", branch)), branch)


        if scene is not None and scene.has_part:
            masks = (torch.from_numpy(scene.object_mask), torch.from_numpy(scene.part_mask))
            display(table(shares_rows(explanations, masks, shallow_and_deep),
                          ["model / branch", "block", "part", "body", "off"]))
        else:
            print("The image has no part mask (not a bird scene): no shares to compute.")
    '''),
    md("""
        One scene is an anecdote. The next cell repeats the measurement for the last block over
        several bird scenes of the benchmark's test split and states the result in words. It
        needs models of the synthetic classes (`MODEL_WEIGHTS` "embedded" or "random").
    """),
    code('''
        if SYNTHETIC and len(models) == 3:
            bird_indices = [i for i in range(10 * N_SUMMARY_SCENES) if i % 10 in PART_LABELS]
            bird_indices = bird_indices[:N_SUMMARY_SCENES]
            birds = SyntheticScenes(max(bird_indices) + 1, seed=0, split="test")
            items = [birds[i] for i in bird_indices]
            x = torch.stack([it["image"] for it in items]).to(DEVICE)
            masks = (torch.stack([it["object_mask"] for it in items]),
                     torch.stack([it["part_mask"] for it in items]))
            batch_exps = {}
            for role, model in models.items():
                with cx.Explainer(model) as explainer:
                    last = {b: [explainer.num_blocks(b)] for b in explainer.branches}
                    batch_exps[model.model_name] = explainer.explain(
                        x, target=[it["label"] for it in items], methods=("features",), blocks=last)
            summary = shares_rows(batch_exps, masks, lambda exp, branch: exp.blocks("features", branch))
            part_area = float(masks[1].float().mean())  # what a uniform map would put on the head
            display(table(summary, ["model / branch", "block", "part", "body", "off"]))
        else:
            summary = None
            print("The summary needs the three models of the synthetic scenes.")
    '''),
    code('''
        def reading(summary, n):
            by = {row["model / branch"]: row for row in summary}
            cnn = by[column_label("cnn", "cnn")]
            c_cnn = by[column_label("conformer", "cnn")]
            vit = by[column_label("transformer", "transformer")]
            c_vit = by[column_label("conformer", "transformer")]
            on = {k: 1 - row["off"] for k, row in by.items()}
            lines = [f"On these {n} bird scenes, at the last block:"]
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
            more = "more" if on[column_label("conformer", "transformer")] > on[column_label(
                "transformer", "transformer")] else "less"
            lines.append(
                f"- Conformer's transformer branch keeps {more} of its energy on the object than "
                f"{MODEL_NAMES['transformer']} ({1 - c_vit['off']:.0%} against {1 - vit['off']:.0%}).")
            lines.append(
                "\\nFeature maps (a channel mean) are a coarse reading and the sample is small; "
                "notebook 04 and `conformer-xai evaluate` measure the same on more scenes and methods.")
            return Markdown("\\n".join(lines))


        reading(summary, N_SUMMARY_SCENES) if summary else None
    '''),
    md("""
        ## Reading the figure carefully

        * The micro models see 128 x 128 scenes: the deep CNN maps are 4 x 4 and the token grids
          8 x 8, so the last-block panels are coarse by construction (the paper's 224 x 224
          inputs give 7 x 7 and 14 x 14).
        * A feature map shows where activations are large, not what decided the class: compare
          with the Grad-CAM figure, and see notebook 02 for every block, head and branch.
        * The statements above are computed from this run's outputs and hold for these scenes
          and models only; with `MODEL_WEIGHTS = "imagenet"` the same cells draw the paper's own
          models on a photo.
    """),
]


# ---------------------------------------------------------------------------------- 02
NB02 = [
    md("""
        # 02 · Grad-CAM per branch and per classifier head, IntegratedGradients, and an explorer

        Conformer has **two branches** (CNN and transformer) and **three classifier heads**: the
        CNN head (average-pooled CNN features), the transformer head (the class token) and the
        fused prediction (their sum). A gradient method explains one head's score on one branch's
        block, so for every block there is a head-by-branch matrix of maps. The CNN head's
        gradient on the transformer branch is the cross-branch evidence that flows through the
        coupling units; the transformer head has no gradient path to the CNN branch's last block
        (that block feeds only the CNN head), so that map is zero by construction.

        `cx.Explainer` computes all of it in one forward pass with one `autograd.grad` per head.
        The notebook then puts captum's IntegratedGradients per head beside Grad-CAM, checks our
        Grad-CAM against pytorch-grad-cam's, and ends with an interactive explorer.
    """),
    md("## Parameters"),
    code('''
        MODEL_WEIGHTS = "embedded"  # "embedded", "imagenet", "random", or a Conformer checkpoint path
        CONFORMER_NAME = "conformer_small_patch16"  # architecture of that checkpoint (paths only)
        IMAGE = None      # an image file; None: a generated benchmark scene (or chelsea.png for imagenet)
        SCENE_INDEX = 18  # benchmark scene used when IMAGE is None (18: a red-headed bird)
        TARGET = None     # class index to explain; None: the fused head's top-1 class
        IG_STEPS = 16     # IntegratedGradients steps
        DEVICE = "cpu"
    ''', "parameters"),
    FAST_NOTE,
    code('''
        %matplotlib inline
        import os
        import tempfile
        from pathlib import Path

        import numpy as np
        import torch
        from IPython.display import Markdown, display
        from matplotlib.figure import Figure
        from PIL import Image

        import conformer_xai as cx
        from conformer_xai.data import class_names_for
        from conformer_xai.synthetic import SyntheticScenes

        FAST = os.environ.get("CONFORMER_XAI_FAST") == "1"
        if FAST:
            IG_STEPS = min(IG_STEPS, 8)
        EXPLORER_SCENES = 3 if FAST else 10
        torch.manual_seed(0);
    '''),
    LOAD_MODELS,
    code('''
        model = load("conformer")
        class_names = class_names_for(model)
        print(model.model_name, "weights:", model.weights_source)
    '''),
    IMAGE_HELPERS,
    md("""
        ## Every gradient map in one pass

        Four methods of the Grad-CAM family, three heads, two branches, twelve blocks: 288 maps
        from one forward pass and three gradient computations.
    """),
    code('''
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
    '''),
    md("""
        ## Grad-CAM across all blocks, per head and branch

        One strip per (head, branch). Watch in which block each branch's maps settle on the
        object, and note the transformer head's empty panel at the CNN branch's last block (no
        gradient path).
    """),
    code('''
        for head in HEADS:
            for branch in ("cnn", "transformer"):
                display(cx.plot.block_strip(exp, "gradcam", branch, head=head))
    '''),
    md("""
        ## The head-by-branch matrix

        Rows are classifier heads, columns branches; each row states the head's probability of
        the explained class. The diagonal is the usual reading (each head on its own branch); the
        off-diagonal cells are what no single-branch tool shows: the evidence one head draws from
        the other branch through the coupling units.
    """),
    code('''
        display(cx.plot.head_branch_matrix(exp))
        display(cx.plot.head_branch_matrix(exp, block=6))
    '''),
    MARKDOWN_TABLE,
    code('''
        rows = []
        for k in exp.blocks("gradcam", "cnn"):
            row = {"block": k}
            for branch in ("cnn", "transformer"):
                rho = cx.metrics.spearman(exp.get("gradcam", branch, k, head="cnn")[0],
                                          exp.get("gradcam", branch, k, head="transformer")[0])
                row[f"{branch} branch"] = float(rho)
            rows.append(row)
        display(Markdown("**Agreement of the CNN head's and the transformer head's Grad-CAM** "
                         "(Spearman rank correlation per block; – where a map is all zero)"))
        table(rows, ["block", "cnn branch", "transformer branch"], digits=2)
    '''),
    md("""
        ## The Grad-CAM family at a shallow, middle and deep block (fused head)

        Grad-CAM weights channels by their mean gradient; Grad-CAM++ by positive second-order
        terms; LayerCAM weights every position by its own positive gradient (finer maps in early
        blocks); HiResCAM multiplies gradients and activations element-wise before summing.
    """),
    code('''
        def family_figure(exp, head, blocks=(4, 8, 12)):
            columns = [(b, k) for b in ("cnn", "transformer") for k in blocks]
            fig = Figure(figsize=(1.6 * len(columns) + 0.8, 1.7 * len(GRADIENT_METHODS) + 0.4),
                         layout="constrained")
            axes = fig.subplots(len(GRADIENT_METHODS), len(columns), squeeze=False)
            for r, method in enumerate(GRADIENT_METHODS):
                for c, (branch, k) in enumerate(columns):
                    cx.plot.map_panel(exp.get(method, branch, k, head=head)[0], exp.image[0],
                                      title=f"{branch} · block {k}" if r == 0 else None,
                                      colorbar=False, ax=axes[r, c])
                axes[r, 0].set_ylabel(cx.plot.METHOD_LABELS[method], fontsize=9)
            fig.suptitle(f"{head} head · target: {exp.class_name(int(exp.target[0]))}", fontsize=10)
            return fig


        family_figure(exp, "fused")
    '''),
    md("""
        ## captum's IntegratedGradients per head, beside Grad-CAM

        `explainer.head_fn(head)` is a forward function returning one head's logits, which is
        what captum's attribution classes take. IntegratedGradients attributes the score to
        input pixels (baseline: zero after normalisation, the mean colour); Grad-CAM attributes
        it to a block's spatial positions. Each row is one head; the titles give the Spearman
        rank correlation of each Grad-CAM map with the head's IntegratedGradients map.
    """),
    code('''
        from captum.attr import IntegratedGradients


        def normalise(m):
            m = m - m.min()
            return m / m.max() if m.max() > 0 else m


        ig_maps = {}
        with cx.Explainer(model) as explainer:
            for head in HEADS:
                ig = IntegratedGradients(explainer.head_fn(head))
                attribution = ig.attribute(x, baselines=torch.zeros_like(x), target=target,
                                           n_steps=IG_STEPS, internal_batch_size=IG_STEPS)
                ig_maps[head] = normalise(attribution.abs().sum(dim=1)[0].detach())


        def deepest_nonzero(exp, branch, head):
            return max(k for k in exp.blocks("gradcam", branch, head)
                       if exp.get("gradcam", branch, k, head=head).max() > 0)


        fig = Figure(figsize=(7.2, 2.3 * len(HEADS)), layout="constrained")
        axes = fig.subplots(len(HEADS), 3, squeeze=False)
        for r, head in enumerate(HEADS):
            cx.plot.map_panel(ig_maps[head], exp.image[0], title=f"IntegratedGradients ({IG_STEPS} steps)",
                              colorbar=False, ax=axes[r, 0])
            axes[r, 0].set_ylabel(f"{head} head", fontsize=9)
            for c, branch in enumerate(("cnn", "transformer"), start=1):
                k = deepest_nonzero(exp, branch, head)
                cam = exp.get("gradcam", branch, k, head=head)[0]
                rho = float(cx.metrics.spearman(cam, ig_maps[head]))
                cx.plot.map_panel(cam, exp.image[0], title=f"Grad-CAM {branch} {k} · ρ={rho:.2f}",
                                  colorbar=False, ax=axes[r, c])
        fig
    '''),
    md("""
        ## Same taps as pytorch-grad-cam

        `explainer.pytorch_grad_cam` runs any pytorch-grad-cam method on the tap our engine
        reads (with the reshape transform for the tokens), for one head and target. Our one-pass
        Grad-CAM should agree with it up to interpolation details.
    """),
    code('''
        from pytorch_grad_cam import GradCAM

        with cx.Explainer(model) as explainer:
            for branch in ("cnn", "transformer"):
                theirs = explainer.pytorch_grad_cam(GradCAM, x, branch, 6, head="cnn", target=target)
                ours = exp.get("gradcam", branch, 6, head="cnn")[0].numpy()
                r = np.corrcoef(ours.ravel(), theirs[0].ravel())[0, 1]
                print(f"{branch:12s} block 6, cnn head: Pearson r with pytorch-grad-cam = {r:.4f}")
    '''),
    md("""
        ## Interactive explorer

        Pick an image, a classifier head, a branch, a method and a block. Every map of an image
        comes from one explanation computed on first use (all methods, all heads) and cached.
        Attention, rollout and gradient rollout exist only on the transformer branch; rollout
        maps have no block. In a live notebook the controls redraw the map; in a static render
        (HTML, or a headless run) only the figure after the controls is shown, drawn by calling
        the same function once.
    """),
    code('''
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
            EXPLORER_METHODS = explainer.applicable_methods()
            N_BLOCKS = explainer.num_blocks("cnn")
        TRANSFORMER_ONLY = ("attention", "rollout", "grad_rollout")
        cache = {}


        def explanation_of(image):
            if image not in cache:
                xi, pixels = explorer_images[image]
                with cx.Explainer(model, class_names=class_names) as explainer:
                    cache[image] = explainer.explain(xi.to(DEVICE), head=HEADS,
                                                     methods=EXPLORER_METHODS, image=pixels[None])
            return cache[image]


        def view(image, head, branch, method, block):
            """The map for one choice of the controls, as a figure."""
            e = explanation_of(image)
            if method in TRANSFORMER_ONLY:
                branch = "transformer"
            k = None if method in ("rollout", "grad_rollout") else block
            m = e.get(method, branch, k, head=head)[0]
            where = f"{branch} branch" + ("" if k is None else f" · block {k}")
            uses_head = method in GRADIENT_METHODS or method == "grad_rollout"
            p = e.probs[head][0, int(e.target[0])]
            title = (f"{cx.plot.METHOD_LABELS[method]} · {where}\\n"
                     + (f"{head} head, p({e.class_name(int(e.target[0]))}) = {p:.2f}" if uses_head
                        else f"target: {e.class_name(int(e.target[0]))}"))
            if not bool(m.max() > 0):
                title += " · all-zero map"
            return cx.plot.map_panel(m, e.image[0], title=title)


        controls = {
            "image": widgets.Dropdown(options=list(explorer_images), description="image"),
            "head": widgets.Dropdown(options=list(HEADS), value=HEADS[0], description="head"),
            "branch": widgets.Dropdown(options=["cnn", "transformer"], description="branch"),
            "method": widgets.Dropdown(options=list(EXPLORER_METHODS), value="gradcam",
                                       description="method"),
            "block": widgets.IntSlider(min=1, max=N_BLOCKS, value=N_BLOCKS, description="block"),
        }


        def show(**choice):
            display(view(**choice))


        output = widgets.interactive_output(show, controls)
        display(widgets.VBox([widgets.HBox([controls["image"], controls["head"], controls["branch"]]),
                              widgets.HBox([controls["method"], controls["block"]]), output]))
    '''),
    code('''
        # the explorer's current view, drawn directly (what a static render shows)
        view(**{name: control.value for name, control in controls.items()})
    '''),
]


# ---------------------------------------------------------------------------------- 03
NB03 = [
    md("""
        # 03 · Attention, rollout and gradient rollout: Conformer's transformer branch against a plain transformer

        * **Attention** (per block): the class token's attention to the patches, averaged over
          the attention heads.
        * **Rollout** (Abnar and Zuidema 2020): fuse the attention heads, add the identity for
          the residual connection (A' = 0.5 A + 0.5 I, rows renormalised), multiply through the
          blocks, read the class token's row. Options: head fusion (mean, max, min), discard
          ratio (drop the weakest weights first), first block.
        * **Gradient rollout** (Chefer et al. 2021): weight each block's attention by the
          gradient of the target score (ReLU of gradient times attention, averaged over heads),
          accumulate R = R + Ā R; class-specific, one map per classifier head.

        We compare Conformer's transformer branch with the plain transformer model of the same
        size, then look at what rollout cannot see in Conformer: the CNN features that the
        coupling units add to the tokens before every block.
    """),
    md("## Parameters"),
    code('''
        MODEL_WEIGHTS = "embedded"  # "embedded", "imagenet", "random", or a Conformer checkpoint path
        CONFORMER_NAME = "conformer_small_patch16"  # architecture of that checkpoint (paths only)
        IMAGE = None     # an image file; None: a generated benchmark scene (or chelsea.png for imagenet)
        SCENE_INDEX = 7  # benchmark scene used when IMAGE is None (7: a wavy cross)
        DEVICE = "cpu"
    ''', "parameters"),
    FAST_NOTE,
    code('''
        %matplotlib inline
        import os
        import tempfile
        from pathlib import Path

        import numpy as np
        import torch
        from IPython.display import Markdown, display
        from matplotlib.figure import Figure
        from PIL import Image

        import conformer_xai as cx
        from conformer_xai.data import class_names_for
        from conformer_xai.synthetic import SyntheticScenes

        FAST = os.environ.get("CONFORMER_XAI_FAST") == "1"
        N_SCENES = 2 if FAST else 8  # benchmark scenes for the rollout-options table
        torch.manual_seed(0);
    '''),
    LOAD_MODELS,
    code('''
        roles = [r for r in ("conformer", "transformer") if r in MODEL_NAMES]
        models = {MODEL_NAMES[r]: load(r) for r in roles}
        CONFORMER = MODEL_NAMES["conformer"]
        for name, model in models.items():
            print(f"{name:26s} weights: {model.weights_source}")
    '''),
    IMAGE_HELPERS,
    code('''
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
    '''),
    md("""
        ## Attention block by block

        The class token's attention, averaged over attention heads, in every block.
    """),
    code('''
        for name, exp in explanations.items():
            display(cx.plot.block_strip(exp, "attention", "transformer"))
    '''),
    md("""
        Each attention head separately, at the last block (`attn_heads=True` keeps them in
        `exp.raw["attention_heads/transformer/<k>"]`, at token-grid resolution).
    """),
    code('''
        def heads_figure(exp, k):
            per_head = exp.raw[f"attention_heads/transformer/{k}"][0]  # (A, h, w)
            fig = Figure(figsize=(2.0 * len(per_head), 2.3), layout="constrained")
            axes = fig.subplots(1, len(per_head), squeeze=False)[0]
            for a, (ax, m) in enumerate(zip(axes, per_head)):
                m = (m - m.min()) / (m.max() - m.min() + 1e-12)
                cx.plot.map_panel(m, exp.image[0], title=f"attention head {a}", colorbar=False, ax=ax)
            fig.suptitle(f"{exp.model_name} · block {k}", fontsize=10)
            return fig


        for name, exp in explanations.items():
            display(heads_figure(exp, max(exp.blocks("attention", "transformer"))))
    '''),
    md("""
        ## Rollout, gradient rollout and Grad-CAM

        Rollout is class-agnostic (it only multiplies attention); gradient rollout and Grad-CAM
        follow the target's gradient. For Conformer the gradients are those of the fused head,
        and of the transformer head alone.
    """),
    code('''
        def rollout_row(exp):
            panels = [("attention rollout", exp.get("rollout", "transformer"))]
            for head in exp.heads:
                panels.append((f"gradient rollout · {head}", exp.get("grad_rollout", "transformer", head=head)))
            k = max(exp.blocks("gradcam", "transformer"))
            panels.append((f"Grad-CAM block {k} · {exp.heads[-1]}",
                           exp.get("gradcam", "transformer", k, head=exp.heads[-1])))
            return panels


        rows = {name: rollout_row(exp) for name, exp in explanations.items()}
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
        fig
    '''),
    md("""
        ## Head fusion and discard ratio

        Rollout's options change the picture a lot: `max` fusion follows the most confident
        attention head, `min` the consensus; discarding the weakest attention weights (per
        block, before the identity is added) sharpens the map. Options go through
        `rollout_options=dict(head_fusion=..., discard_ratio=..., start_block=...)`; the
        attention is recorded once per call, without gradients.
    """),
    code('''
        FUSIONS = ("mean", "max", "min")
        DISCARDS = (0.0, 0.5, 0.9)


        def rollout_grid(model, image_path):
            x, shown = cx.load_image(image_path, model)
            fig = Figure(figsize=(2.0 * len(DISCARDS) + 0.6, 2.1 * len(FUSIONS) + 0.3),
                         layout="constrained")
            axes = fig.subplots(len(FUSIONS), len(DISCARDS), squeeze=False)
            with cx.Explainer(model) as explainer:
                for r, fusion in enumerate(FUSIONS):
                    for c, discard in enumerate(DISCARDS):
                        e = explainer.explain(x.to(DEVICE), methods=("rollout",), rollout_options=dict(
                            head_fusion=fusion, discard_ratio=discard))
                        cx.plot.map_panel(e.get("rollout", "transformer")[0], shown, colorbar=False,
                                          title=f"discard {discard:.0%}" if r == 0 else None, ax=axes[r, c])
                    axes[r, 0].set_ylabel(f"{fusion} fusion", fontsize=9)
            fig.suptitle(f"{model.model_name}: attention rollout options", fontsize=10)
            return fig


        for name, model in models.items():
            display(rollout_grid(model, image_path))
    '''),
    md("""
        ### Which options localise the object?

        On benchmark scenes the object mask is known: the energy-based pointing game
        (`cx.metrics.energy_pointing_game`, the share of the map's energy on the object) and the
        pointing game (does the maximum fall on it?) score each option, averaged over scenes.
    """),
    MARKDOWN_TABLE,
    code('''
        if SYNTHETIC:
            data = SyntheticScenes(N_SCENES, seed=0, split="test")
            items = [data[i] for i in range(N_SCENES)]
            xs = torch.stack([it["image"] for it in items]).to(DEVICE)
            labels = [it["label"] for it in items]
            object_masks = torch.stack([it["object_mask"] for it in items])
            rows = []
            for name, model in models.items():
                with cx.Explainer(model) as explainer:
                    for fusion in FUSIONS:
                        for discard in DISCARDS:
                            e = explainer.explain(xs, methods=("rollout",), rollout_options=dict(
                                head_fusion=fusion, discard_ratio=discard))
                            m = e.get("rollout", "transformer")
                            rows.append({"model": name, "rollout": f"{fusion}, discard {discard:.0%}",
                                         "energy on object": float(cx.metrics.energy_pointing_game(m, object_masks).nanmean()),
                                         "pointing game": float(cx.metrics.pointing_game(m, object_masks).nanmean())})
                    e = explainer.explain(xs, target=labels, methods=("grad_rollout",), head=explainer.default_head)
                    m = e.get("grad_rollout", "transformer")
                    rows.append({"model": name, "rollout": f"gradient rollout ({explainer.default_head} head)",
                                 "energy on object": float(cx.metrics.energy_pointing_game(m, object_masks).nanmean()),
                                 "pointing game": float(cx.metrics.pointing_game(m, object_masks).nanmean())})
            display(table(rows, ["model", "rollout", "energy on object", "pointing game"]))
            best = {name: max((r for r in rows if r["model"] == name), key=lambda r: r["energy on object"])
                    for name in models}
            display(Markdown("On these {} scenes the highest energy on the object comes from: ".format(N_SCENES)
                             + "; ".join(f"**{n}**: {r['rollout']} ({r['energy on object']:.0%})"
                                         for n, r in best.items()) + "."))
        else:
            print("The options table needs the models of the synthetic scenes (MODEL_WEIGHTS embedded or random).")
    '''),
    md("""
        ## What rollout misses in Conformer: the coupling units

        Rollout models each block as "attention plus identity" (the residual connection): each
        token after a block is a mixture of the tokens before it. That is a heuristic even for a
        plain ViT (it ignores the values, the norms and the MLPs), but there it accounts for
        every path between tokens: in a ViT, tokens exchange information only through attention.
        Not so in Conformer. In the coupled blocks 2 to 12 the transformer block does not read
        its own tokens only: **FCU down** first adds the CNN branch's features of the same block
        (1x1 conv, average pooling to the token grid, LayerNorm, GELU) to every patch token:

            x_t ← trans_block(x_t + FCU_down(x_cnn))

        The CNN branch mixes neighbouring positions with its convolutions (and receives the
        tokens back through FCU up), so information moves between token positions along a path
        that is not attention. Rollout attributes whatever the tokens carry from the CNN branch to
        the token positions themselves, as if it had been there all along. And **FCU up** sends the tokens back into
        the CNN branch, which feeds the CNN head: evidence that rollout, reading only the class
        token's attention, never follows. Gradient methods (Grad-CAM on the transformer taps,
        gradient rollout's gradients) do pass through both units.

        How large is that injected signal? Forward hooks on the published module names
        (`conv_trans_k.squeeze_block` is FCU down) measure, per block, the norm of what FCU down
        adds to the patch tokens relative to the norm of the tokens it is added to.
    """),
    code('''
        conformer = models[CONFORMER]
        x, _ = cx.load_image(image_path, conformer)
        ratios = {}


        def measure(k):
            def hook(module, args, output):
                x2, tokens = args
                added = output[:, 1:]  # patch tokens (the class token is copied through)
                ratios[k] = float(added.norm() / tokens[:, 1:].norm())
            return hook


        handles = [getattr(conformer, f"conv_trans_{k}").squeeze_block.register_forward_hook(measure(k))
                   for k in range(2, conformer.depth + 1)]
        try:
            with torch.no_grad():
                conformer(x.to(DEVICE))
        finally:
            for h in handles:
                h.remove()

        fig = Figure(figsize=(6.0, 2.6), layout="constrained")
        ax = fig.add_subplot()
        ax.bar(list(ratios), list(ratios.values()), color="tab:orange")
        ax.axhline(1.0, color="0.5", lw=0.8, ls="--")
        ax.set_xlabel("block")
        ax.set_ylabel("‖FCU down‖ / ‖tokens‖")
        ax.set_xticks(list(ratios))
        ax.set_title(f"{CONFORMER}: CNN features added to the patch tokens before each block", fontsize=10)
        fig
    '''),
    code('''
        lo, hi = min(ratios.values()), max(ratios.values())
        Markdown(f"On this image the CNN features that FCU down adds have between {lo:.0%} and {hi:.0%} "
                 f"of the norm of the patch tokens they join (blocks 2 to {conformer.depth}). "
                 "None of it is visible to attention rollout. One place to look for the consequence: "
                 "how well rollout agrees with the gradient-based maps, in the coupled model and in "
                 "the plain transformer.")
    '''),
    code('''
        def agreement(exp):
            head = exp.heads[-1]
            rollout = exp.get("rollout", "transformer")[0]
            k = max(exp.blocks("gradcam", "transformer"))
            return {"model": exp.model_name,
                    "ρ(rollout, gradient rollout)": float(cx.metrics.spearman(rollout, exp.get("grad_rollout", "transformer", head=head)[0])),
                    f"ρ(rollout, Grad-CAM block {k})": float(cx.metrics.spearman(rollout, exp.get("gradcam", "transformer", k, head=head)[0])),
                    "head": head}


        rows = [agreement(exp) for exp in explanations.values()]
        display(table(rows, list(rows[0])))
        if len(rows) == 2:
            key = [c for c in rows[0] if c.startswith("ρ(rollout, Grad-CAM")][0]
            conformer_rho, plain_rho = rows[0][key], rows[1][key]
            relation = "less" if conformer_rho < plain_rho else "more"
            display(Markdown(
                f"On this image, rollout agrees {relation} with Grad-CAM in {rows[0]['model']} "
                f"(ρ = {conformer_rho:.2f}) than in {rows[1]['model']} (ρ = {plain_rho:.2f})."))
    '''),
    md("""
        The table is one image: read it as an illustration, not a finding. The mechanism above
        holds for every input; how much it changes a given map depends on the image and the
        weights. When rollout and the gradient-based maps disagree on Conformer, the gradient
        maps are the ones that account for the coupling.
    """),
]


# ---------------------------------------------------------------------------------- 04
NB04 = [
    md("""
        # 04 · Branch comparison on the ground-truth benchmark: agreement, faithfulness, localisation

        The benchmark's scenes come with object and part masks, so explanations can be scored
        instead of admired:

        * **agreement** between Conformer's two branches, block by block (Spearman rank
          correlation and top-10 % IoU of the maps, `cx.metrics.spearman` / `topk_iou`);
        * **faithfulness** (Petsiuk et al. 2018, RISE): deletion AUC (remove the most relevant
          pixels first; lower is better) and insertion AUC (restore them into a blurred image;
          higher is better), `cx.metrics.deletion_auc` / `insertion_auc`;
        * **localisation**: the pointing game (Zhang et al. 2016: does the map's maximum fall on
          the object?) and the energy-based pointing game (Wang et al. 2020: the share of the
          map's energy on the object), plus the part / body / off shares on the bird scenes.

        Models: the CNN model, Conformer (both branches) and the transformer model trained on
        the same scenes. Conformer's maps explain the fused prediction unless said otherwise.
        `conformer-xai evaluate` computes the same metrics over any number of scenes.
    """),
    md("## Parameters"),
    code('''
        MODEL_WEIGHTS = "embedded"  # "embedded" or "random": models of the synthetic scene classes
        N_IMAGES = 8   # benchmark scenes (4 to 10: the first classes plus the two bird classes)
        STEPS = 50     # steps of the deletion and insertion curves
        SEED = 0       # seed of the benchmark scenes (test split)
        DEVICE = "cpu"
    ''', "parameters"),
    FAST_NOTE,
    code('''
        %matplotlib inline
        import os

        import numpy as np
        import torch
        from IPython.display import Markdown, display
        from matplotlib.figure import Figure

        import conformer_xai as cx
        from conformer_xai.synthetic import CLASS_NAMES, PART_LABELS, SyntheticScenes

        FAST = os.environ.get("CONFORMER_XAI_FAST") == "1"
        if FAST:
            N_IMAGES, STEPS = 4, 8
        if MODEL_WEIGHTS not in ("embedded", "random"):
            raise ValueError("this notebook scores maps on the synthetic benchmark: MODEL_WEIGHTS must be "
                             "'embedded' (or 'random' for a baseline), got " + repr(MODEL_WEIGHTS))
        if not 4 <= N_IMAGES <= 10:
            raise ValueError(f"N_IMAGES must be between 4 and 10, got {N_IMAGES}")
        torch.manual_seed(0);
    '''),
    MARKDOWN_TABLE,
    code('''
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
        print("scenes:", ", ".join(f"{i}: {CLASS_NAMES[int(l)]}" for i, l in zip(indices, labels)))
    '''),
    md("""
        ## One explanation pass per model

        Each model explains every scene's *true* class. Conformer is explained for all three
        heads (the branch comparisons use the fused head).
    """),
    code('''
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
        Markdown("Top-1 accuracy on these scenes: " + ", ".join(
            f"{MODEL_NAMES[r]} {a:.0%}" for r, a in accuracy.items()))
    '''),
    md("""
        ## 1. Agreement between Conformer's branches, block by block

        Both branches see the same image in every block and exchange features through the
        coupling units. Do their maps agree? Spearman ρ and the IoU of the top 10 % pixels
        between the CNN branch's and the transformer branch's map of the same block, averaged
        over the scenes.
    """),
    code('''
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
        fig
    '''),
    code('''
        rows = [{"block": k, "features ρ": agreement["features"][0][i],
                 "features IoU": agreement["features"][1][i], "Grad-CAM ρ": agreement["gradcam"][0][i],
                 "Grad-CAM IoU": agreement["gradcam"][1][i]} for i, k in enumerate(blocks)]
        display(table(rows, ["block", "features ρ", "features IoU", "Grad-CAM ρ", "Grad-CAM IoU"], digits=2))
        best = max(rows, key=lambda r: r["features ρ"])
        worst = min(rows, key=lambda r: r["features ρ"])
        Markdown(f"On these {N_IMAGES} scenes the branches' feature maps agree most at block {best['block']} "
                 f"(ρ = {best['features ρ']:.2f}) and least at block {worst['block']} (ρ = {worst['features ρ']:.2f}).")
    '''),
    md("""
        The same comparison across models: Conformer's CNN branch against the CNN model and its
        transformer branch against the transformer model, for one scene (`cx.plot.compare`;
        models of different depth are paired by relative depth, ρ in each column title).
    """),
    code('''
        SHOWN = len(indices) - 2  # the first bird scene
        display(cx.plot.compare(explanations["cnn"].select(SHOWN), conf.select(SHOWN), method="features",
                                branch="cnn"))
        display(cx.plot.compare(explanations["transformer"].select(SHOWN), conf.select(SHOWN),
                                method="features", branch="transformer"))
    '''),
    md("""
        ## 2. Faithfulness: deletion and insertion

        For each model and branch, the last block's feature map and Grad-CAM, and rollout for the
        transformers, plus a **random map** as the baseline every method should beat. The score
        is the softmax probability of the true class from the head the map explains (the fused
        head for Conformer's maps, the only head otherwise). Deletion replaces pixels by the mean
        colour; insertion starts from a blurred copy. This is the slow part of the notebook:
        `N_IMAGES x (STEPS + 1)` forward passes per map and metric (a few minutes on a laptop
        CPU with the defaults).
    """),
    code('''
        def last(role, branch):
            return max(explanations[role].blocks("features", branch))


        BRANCHES = {"cnn": ("cnn",), "conformer": ("cnn", "transformer"), "transformer": ("transformer",)}
        HEAD = {"cnn": "cnn", "conformer": "fused", "transformer": "transformer"}
        generator = torch.Generator().manual_seed(SEED)
        faithfulness_maps = []  # (role, branch, label, maps)
        for role in models:
            e = explanations[role]
            for branch in BRANCHES[role]:
                k = last(role, branch)
                faithfulness_maps.append((role, branch, f"feature map {k}", e.get("features", branch, k)))
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
                                 "deletion ↓": float(deletion.mean()), "insertion ↑": float(insertion.mean())})
        table(faithfulness, ["model", "branch", "map", "deletion ↓", "insertion ↑"])
    '''),
    code('''
        fig = Figure(figsize=(11.0, 4.2), layout="constrained")
        ax_bar, ax_del, ax_ins = fig.subplots(1, 3, width_ratios=(1.3, 1, 1))
        names = [f"{MODEL_NAMES[r].split('_')[0]} {'' if b == '–' else b} · {l}" for r, b, l, _ in faithfulness_maps]
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
        fig
    '''),
    md("""
        ## 3. Localisation: pointing game per block

        Cheap to compute, so every block of every branch: the pointing game and the energy-based
        pointing game against the object mask, for the feature maps and Grad-CAM. The x axis is
        the relative depth (block / number of blocks), so that the 8-block ResNet and the
        12-block models line up.
    """),
    code('''
        localisation = {}  # (role, branch, method) -> (blocks, pg, epg)
        for role in models:
            e = explanations[role]
            for branch in BRANCHES[role]:
                for method in ("features", "gradcam"):
                    head = HEAD[role] if method == "gradcam" else None
                    ks = e.blocks(method, branch, head)
                    pg = [float(cx.metrics.pointing_game(e.get(method, branch, k, head=head), object_masks).nanmean()) for k in ks]
                    epg = [float(cx.metrics.energy_pointing_game(e.get(method, branch, k, head=head), object_masks).nanmean()) for k in ks]
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
            axes[0, col].set_title(cx.plot.METHOD_LABELS[method] + (" (fused head for Conformer)" if method == "gradcam" else ""), fontsize=10)
            axes[1, col].axhline(object_share, color="0.4", lw=0.8, ls=":", label="uniform map")
            axes[1, col].set_xlabel("relative depth (block / blocks)")
        axes[0, 0].set_ylabel("pointing game")
        axes[1, 0].set_ylabel("energy on the object")
        for ax in axes.ravel():
            ax.grid(alpha=0.3)
        axes[1, 1].legend(fontsize=7)
        fig
    '''),
    code('''
        rows = []
        for role in models:
            e = explanations[role]
            entries = [(branch, method, last(role, branch)) for branch in BRANCHES[role]
                       for method in ("features", "gradcam")]
            if "rollout" in METHODS[role]:
                entries.append(("transformer", "rollout", None))
            for branch, method, k in entries:
                head = HEAD[role] if method == "gradcam" else None
                m = e.get(method, branch, k, head=head)
                shares = cx.metrics.part_body_off_shares(m[has_part], object_masks[has_part], part_masks[has_part])
                rows.append({"model": MODEL_NAMES[role], "branch": branch,
                             "map": cx.plot.METHOD_LABELS[method] + ("" if k is None else f" {k}"),
                             "pointing game": float(cx.metrics.pointing_game(m, object_masks).nanmean()),
                             "energy on object": float(cx.metrics.energy_pointing_game(m, object_masks).nanmean()),
                             "part (birds)": float(shares.part.nanmean()), "body (birds)": float(shares.body.nanmean()),
                             "off (birds)": float(shares.off.nanmean())})
        display(table(rows, list(rows[0]), digits=2))
        print(f"uniform-map baseline: energy on object = {object_share:.2f} (the objects' mean area); "
              f"part / body / off shares are over the {int(has_part.sum())} bird scenes")
    '''),
    code('''
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
        text.append("\\nWith so few scenes these are indications; `conformer-xai evaluate --n 200` gives "
                    "the benchmark's numbers.")
        Markdown("\\n".join(text))
    '''),
]


# ---------------------------------------------------------------------------------- 05
NB05 = [
    md("""
        # 05 · Your own checkpoint: a 3-class Conformer on 1-channel, non-square spectrograms

        Users bring fine-tuned Conformers that look nothing like ImageNet models: one input
        channel, non-square inputs (log-mel spectrograms, say 1 x 64 x T), three classes. This
        notebook makes such a checkpoint and then uses it exactly as a user with their own file
        would:

        1. generate log-mel-like spectrograms of three kinds of synthetic animal "calls"
           (rising chirps, harmonic stacks, broadband click trains) over noise, and save them as
           `.npy` files;
        2. adapt the small embedded Conformer to 1 channel and 3 classes
           (`cx.load_model(..., in_chans=1, num_classes=3, new_head=True)`: the stem's RGB filters
           are summed into one channel, the heads start fresh) and fine-tune it for about a
           minute;
        3. save the state dict with `torch.save`, then load it back with nothing but the file:
           `cx.load_model("conformer_micro_patch16", checkpoint=path)` reads the 3 classes and
           the 1 input channel from the tensors;
        4. explain and plot a spectrogram: both branches, every head, rollout, and how much of
           each map falls on the call.
    """),
    md("## Parameters"),
    code('''
        BASE_MODEL = "conformer_micro_patch16"
        BASE_WEIGHTS = "embedded"    # "embedded"; or "imagenet" with BASE_MODEL = "conformer_tiny_patch16"
                                     # (or another published Conformer; downloaded once)
        N_MELS, N_FRAMES = 64, 160   # spectrogram size: both multiples of 32
        TRAIN_SECONDS = 60           # fine-tuning time budget ...
        TRAIN_STEPS = 400            # ... or this many steps, whichever comes first
        BATCH_SIZE = 16
        OUT_DIR = None               # where the spectrograms and the checkpoint go; None: a temporary folder
        DEVICE = "cpu"
    ''', "parameters"),
    FAST_NOTE,
    code('''
        %matplotlib inline
        import os
        import tempfile
        import time
        import warnings
        from pathlib import Path

        import numpy as np
        import torch
        import torch.nn.functional as F
        from IPython.display import Markdown, display
        from matplotlib.figure import Figure

        import conformer_xai as cx

        FAST = os.environ.get("CONFORMER_XAI_FAST") == "1"
        if FAST:
            TRAIN_STEPS, BATCH_SIZE = 10, 8
        N_TRAIN, N_TEST = (48, 12) if FAST else (480, 60)
        if OUT_DIR is None:
            WORK = tempfile.TemporaryDirectory(prefix="conformer_xai_05_")  # removed with the kernel
            OUT_DIR = WORK.name
        OUT_DIR = Path(OUT_DIR)
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        print("output folder:", OUT_DIR)
    '''),
    md("""
        ## Synthetic calls on log-mel-like spectrograms

        Each spectrogram is `N_MELS` frequency bins by `N_FRAMES` time frames of log energy:
        a coloured noise floor (louder at low frequencies, slowly fluctuating), and one call at a
        random time, frequency and loudness:

        * **chirp**: a tone sweeping upwards in frequency, with a weaker parallel track;
        * **harmonic stack**: a steady tone of three to five evenly spaced partials;
        * **clicks**: a train of short broadband pulses.

        The call's mask (the bins where it rises above the noise) is kept for scoring the maps.
    """),
    code('''
        CALL_CLASSES = ("chirp", "harmonic_stack", "clicks")


        def spectrogram(rng, label, n_mels=N_MELS, n_frames=N_FRAMES):
            """One log-mel-like spectrogram (n_mels, n_frames) in dB-like units and the call's mask.

            Row 0 is the highest mel bin, so that the array reads like a spectrogram plot.
            """
            f = np.arange(n_mels)[:, None]
            t = np.arange(n_frames)[None, :]
            floor = -60 + 18 * np.exp(-f / (0.4 * n_mels))  # louder at low frequencies
            floor = floor + 3 * np.sin(2 * np.pi * t / rng.uniform(30, 90) + rng.uniform(0, 6.3))
            noise = floor + rng.normal(0, 4, (n_mels, n_frames))
            length = int(rng.uniform(0.25, 0.45) * n_frames)
            start = int(rng.integers(0, n_frames - length))
            span = slice(start, start + length)
            call = np.zeros((n_mels, n_frames))
            if CALL_CLASSES[label] == "chirp":
                f0 = rng.uniform(0.1, 0.3) * n_mels
                track = f0 + rng.uniform(0.3, 0.5) * n_mels * np.arange(length) / length
                for harmonic, gain in ((1.0, 1.0), (1.35, 0.5)):
                    centre = np.clip(track * harmonic, 0, n_mels - 1)[None, :]
                    call[:, span] = np.maximum(call[:, span],
                                               gain * np.exp(-0.5 * ((f - centre) / 1.2) ** 2))
            elif CALL_CLASSES[label] == "harmonic_stack":
                f0 = rng.uniform(0.08, 0.16) * n_mels
                for h in range(1, int(rng.integers(4, 7))):
                    row = 0.8 ** (h - 1) * np.exp(-0.5 * ((f - h * f0) / 1.0) ** 2)
                    call[:, span] = np.maximum(call[:, span], row)
            else:  # clicks
                lo = int(rng.uniform(0.0, 0.3) * n_mels)
                hi = int(rng.uniform(0.7, 1.0) * n_mels)
                for c in range(start, start + length, int(rng.integers(6, 12))):
                    call[lo:hi, c:c + 2] = 1.0
            frames = np.arange(n_frames)
            fade = np.clip(np.minimum(frames - start + 1, start + length - frames) / 4, 0, 1)
            call = call * fade[None, :]
            db = noise + rng.uniform(22, 32) * call
            return np.flipud(db).astype(np.float32), np.flipud(call > 0.3).copy()


        rng = np.random.default_rng(0)
        examples = [spectrogram(rng, label) for label in range(3)]
        fig = Figure(figsize=(10, 2.4), layout="constrained")
        for ax, (spec, mask), name in zip(fig.subplots(1, 3), examples, CALL_CLASSES):
            ax.imshow(spec, aspect="auto", cmap="magma")
            ax.contour(mask, levels=[0.5], colors="cyan", linewidths=0.6)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("frame")
        fig.axes[0].set_ylabel("mel bin (high at the top)")
        fig
    '''),
    md("""
        Save them as `.npy` files, as a user's dataset would be. A `.npy` array is a raw model
        input by default (fed as it is, see notebook 06); here the embedded model was trained on
        images, so the arrays are read as grayscale images with `as_image=True` (min-max scaled
        to [0, 1], then normalised with the model's mean and std), and the training tensors
        below come from exactly the same preprocessing as the explanation at the end.
        `crop=False` with `input_size=(N_MELS, N_FRAMES)` keeps the non-square shape.
    """),
    code('''
        def write_split(name, n, seed):
            rng = np.random.default_rng(seed)
            folder = OUT_DIR / "spectrograms" / name
            folder.mkdir(parents=True, exist_ok=True)
            files, masks = [], []
            for i in range(n):
                label = i % 3
                spec, mask = spectrogram(rng, label)
                path = folder / f"{i:04d}_{CALL_CLASSES[label]}.npy"
                np.save(path, spec)
                files.append((path, label))
                masks.append(torch.from_numpy(mask))
            return files, torch.stack(masks)


        train_files, _ = write_split("train", N_TRAIN, seed=1)
        test_files, test_masks = write_split("test", N_TEST, seed=2)  # call masks, kept for scoring
        print(f"{len(train_files)} training and {len(test_files)} test spectrograms in {OUT_DIR / 'spectrograms'}")
    '''),
    md("""
        ## Adapt the embedded Conformer: 1 channel, 3 classes

        `in_chans=1` sums the stem's RGB filters into one (timm's `adapt_input_conv`);
        `num_classes=3` with `new_head=True` skips the checkpoint's 10-class heads and starts
        new ones (a `WeightsWarning` names the skipped keys).
    """),
    code('''
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = cx.load_model(BASE_MODEL, weights=BASE_WEIGHTS, in_chans=1, num_classes=3,
                                  new_head=True, device=DEVICE)
        for w in caught:
            print(f"{w.category.__name__}: {w.message}")
        print("stem:", tuple(model.conv1.weight.shape), "· heads:", tuple(model.conv_cls_head.weight.shape),
              tuple(model.trans_cls_head.weight.shape))


        def load_batch(files):
            xs = [cx.load_image(path, model, input_size=(N_MELS, N_FRAMES), crop=False, as_image=True)[0]
                  for path, _ in files]
            return torch.cat(xs).to(DEVICE), torch.tensor([label for _, label in files], device=DEVICE)


        x_train, y_train = load_batch(train_files)
        x_test, y_test = load_batch(test_files)
        print("training tensor:", tuple(x_train.shape))
    '''),
    md("""
        ## Fine-tune for about a minute

        Conformer is trained, as in the paper, with a cross-entropy loss on each head (CNN and
        transformer) and predicts with their sum. Plain AdamW, a fixed learning rate, random
        time shifts as augmentation.
    """),
    code('''
        def accuracy(model, x, y):
            model.eval()
            with torch.no_grad():
                return float((model(x).argmax(1) == y).float().mean())


        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
        generator = torch.Generator().manual_seed(0)
        print(f"before fine-tuning: test accuracy {accuracy(model, x_test, y_test):.0%} (chance 33%)")
        started, step, losses = time.perf_counter(), 0, []
        while step < TRAIN_STEPS and time.perf_counter() - started < TRAIN_SECONDS:
            model.train()
            idx = torch.randint(0, len(x_train), (BATCH_SIZE,), generator=generator)
            xb = torch.roll(x_train[idx], int(torch.randint(-20, 21, (1,), generator=generator)), dims=-1)
            cnn_logits, transformer_logits = model.forward_branches(xb)
            loss = F.cross_entropy(cnn_logits, y_train[idx]) + F.cross_entropy(transformer_logits, y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
        model.eval()
        test_accuracy = accuracy(model, x_test, y_test)
        print(f"{step} steps in {time.perf_counter() - started:.0f} s; last loss {np.mean(losses[-5:]):.3f}; "
              f"test accuracy {test_accuracy:.0%}")
    '''),
    md("""
        ## Save the checkpoint, then load it as a user would

        A plain state dict saved with `torch.save`. Loading needs only the architecture's name
        and the file: the class count and input channels are read from the tensors, and the file
        is read with `torch.load(..., weights_only=True)` (tensors only, no code).
    """),
    code('''
        checkpoint = OUT_DIR / "conformer_micro_calls.pth"
        torch.save(model.state_dict(), checkpoint)
        print(f"saved {checkpoint.name} ({checkpoint.stat().st_size / 1e6:.1f} MB)")

        mine = cx.load_model(BASE_MODEL, checkpoint=checkpoint, device=DEVICE)
        print("loaded:", mine.weights_source, "· classes:", mine.num_classes, "· input channels:",
              mine.conv1.in_channels)
        assert mine.num_classes == 3 and mine.conv1.in_channels == 1
        with torch.no_grad():
            assert torch.allclose(mine(x_test), model(x_test), atol=1e-5)
    '''),
    md("""
        ## Explain a spectrogram

        From here on everything is what a user does with their own file: load the checkpoint
        (above), read a spectrogram with `cx.load_image(path, model, input_size=..., crop=False,
        as_image=True)`,
        explain with both classifier heads, plot. Token grids are non-square here
        (4 x 10 patches for 64 x 160 with patch 16).
    """),
    code('''
        index = next(i for i, (_, l) in enumerate(test_files) if l == 0)  # the first chirp
        path, label = test_files[index]
        x, shown = cx.load_image(path, mine, input_size=(N_MELS, N_FRAMES), crop=False, as_image=True)
        with cx.Explainer(mine, class_names=list(CALL_CLASSES)) as explainer:
            exp = explainer.explain(x.to(DEVICE), target=label, head=("fused", "cnn", "transformer"),
                                    methods=("features", "gradcam", "rollout", "grad_rollout"),
                                    image=shown[None])
        print(f"{path.name}: explained {exp.class_name(label)}; "
              + ", ".join(f"{h} p = {exp.probs[h][0, label]:.2f}" for h in exp.logits))
    '''),
    code('''
        display(cx.plot.block_strip(exp, "gradcam", "cnn", head="cnn", ncols=6))
        display(cx.plot.block_strip(exp, "gradcam", "transformer", head="transformer", ncols=6))
        cx.plot.head_branch_matrix(exp)
    '''),
    code('''
        fig = Figure(figsize=(11, 2.5), layout="constrained")
        panels = [("features · cnn 12", exp.get("features", "cnn", 12)),
                  ("features · transformer 12", exp.get("features", "transformer", 12)),
                  ("attention rollout", exp.get("rollout", "transformer")),
                  ("gradient rollout · fused", exp.get("grad_rollout", "transformer", head="fused"))]
        for ax, (title, m) in zip(fig.subplots(1, len(panels)), panels):
            cx.plot.map_panel(m[0], exp.image[0], title=title, colorbar=False, ax=ax)
        fig
    '''),
    md("""
        ## Which blocks find the call?

        The energy-based pointing game against the call's mask over all test spectrograms: for
        every block, Grad-CAM of each head on its own branch, and rollout and gradient rollout
        (one map per model). A map spread evenly would score the call's area (dotted line).
        At 64 x 160 the CNN branch's last block is a 2 x 5 grid and the tokens a 4 x 10 grid, so
        the deepest maps cannot outline a thin call.
    """),
    code('''
        with cx.Explainer(mine) as explainer:
            batch = explainer.explain(x_test, target=y_test, head=("fused", "cnn", "transformer"),
                                      methods=("gradcam", "rollout", "grad_rollout"))
        on_call = lambda maps: float(cx.metrics.energy_pointing_game(maps, test_masks).nanmean())
        curves = {f"Grad-CAM · {branch} head on the {branch} branch":
                  [on_call(batch.get("gradcam", branch, k, head=branch)) for k in range(1, mine.depth + 1)]
                  for branch in ("cnn", "transformer")}
        flat = {"attention rollout": on_call(batch.get("rollout", "transformer")),
                "gradient rollout (fused head)": on_call(batch.get("grad_rollout", "transformer", head="fused"))}
        area = float(test_masks.float().mean())

        fig = Figure(figsize=(7.5, 3.2), layout="constrained")
        ax = fig.add_subplot()
        blocks = list(range(1, mine.depth + 1))
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
        Markdown(f"Over {len(test_files)} test spectrograms (model test accuracy {test_accuracy:.0%}; "
                 f"the call covers {area:.1%} of a spectrogram on average): "
                 + "; ".join(f"{label} puts most energy on the call at block {k} ({v:.0%})"
                             for label, (k, v) in best.items())
                 + "; " + ", ".join(f"{label} {v:.0%}" for label, v in flat.items()) + ".")
    '''),
    md("""
        ## With the command line

        The same checkpoint works with the CLI; `--array-as-image` reads the `.npy` as this
        notebook did (without it, arrays are fed raw):

            conformer-xai explain spectrograms/test/0000_chirp.npy --model conformer_micro_patch16 \\
                --checkpoint conformer_micro_calls.pth --array-as-image --input-size 64x160 --no-crop --out out/

        With a checkpoint of your own, replace the fine-tuning cells by
        `cx.load_model("<architecture>", checkpoint="<your file>")`.
    """),
]


NB06 = [
    md("""
        # 06 · A spectrogram Conformer as the fork trains it: its checkpoint, a wav, maps in time and frequency

        The `Conformer_xai` fork trains Conformer on 1-channel log-mel spectrograms in dB and
        saves checkpoints with a DeiT-style training script: `model`, `model_ema`, `optimizer`,
        `lr_scheduler`, `epoch` and `args` (an `argparse.Namespace` naming the model). This
        notebook:

        1. saves a checkpoint exactly that way, holding the weights of `conformer_micro_audio`,
           the small spectrogram Conformer shipped with conformer-xai (depth 3, 1 channel,
           trained on the generated sound scenes of `conformer_xai.synthetic`: up-chirp,
           down-chirp, two-tone alarm, click burst, whistle and a buzz with a high or a low
           marker; see `conformer_xai/weights/MODEL_CARD.md`);
        2. loads it with nothing but the file, `cx.load_model(checkpoint=path)`: the name comes
           from `args.model`, the classes and channels from the tensors;
        3. turns a wav into the model input with the fork's front end, `cx.load_audio`
           (STFT 512/160, 112 Slaney mel bands 50-14000 Hz, dB, fold x2 into a 224-row image);
        4. explains it and reads the branch maps on the time-frequency plane (unfolded back to
           mel band x frame, time in seconds and frequency in Hz), and checks them against the
           clip's ground-truth mask: where the deciding sound really is.
    """),
    md("## Parameters"),
    code('''
        WAV = None            # your own .wav/.flac/.ogg; None: the bundled examples/sounds/clip_000.wav
        CHECKPOINT = None     # your own fork checkpoint; None: write one holding the embedded model
        SIZE_MISMATCH = "resize"  # the fork's behaviour for widths that are not multiples of 32
        OUT_DIR = None        # where the files go; None: a temporary folder
        DEVICE = "cpu"
    ''', "parameters"),
    FAST_NOTE,
    code('''
        %matplotlib inline
        import argparse
        import json
        import tempfile
        from pathlib import Path

        import numpy as np
        import torch
        from IPython.display import Markdown, display
        from PIL import Image

        import conformer_xai as cx
        from conformer_xai.synthetic import SOUND_CLASS_NAMES

        ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "examples").is_dir())
        SOUNDS = ROOT / "examples" / "sounds"
        if OUT_DIR is None:
            WORK = tempfile.TemporaryDirectory(prefix="conformer_xai_06_")  # removed with the kernel
            OUT_DIR = WORK.name
        OUT_DIR = Path(OUT_DIR)
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
    '''),
    md("""
        ## A checkpoint as the fork's training script writes it

        `torch.save` of a dict holding the run's `args` Namespace: plain `weights_only=True`
        loading refuses it, conformer-xai allows `argparse.Namespace` (and nothing else new).
        The weights are the embedded `conformer_micro_audio`'s, so the predictions and maps below
        mean something; pass your own file as `CHECKPOINT`.
    """),
    code('''
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
        print(f"{model.model_name}: depth {model.depth}, {model.num_heads} heads, width {model.embed_dim}, "
              f"{model.num_classes} classes, {model.in_chans} input channel(s), size mismatch: {model.size_mismatch}")
    '''),
    md("""
        ## A wav through the fork's front end

        The bundled clip (`examples/sounds/clip_000.wav`, 4.47 s: 448 frames, a 224 x 224 input)
        is a generated sound scene: coloured noise, a mains hum, distractor bursts, and a harmonic
        buzz that starts with a short high marker. Only the marker tells `buzz_high_tag` from
        `buzz_low_tag`. `cx.load_audio` returns the model input (dB, not normalised,
        `(1, C, 224, T'/2)`), the folded image scaled to [0, 1] for drawing, and
        (`with_meta=True`) the settings and the fold, which the explanation keeps so that its maps
        can be unfolded.
    """),
    code('''
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
    '''),
    md("""
        ## Explain, then read the maps on the time-frequency plane

        The explanation stores `meta["fold"]`; `exp.unfolded(...)` gives any map as
        (mel band, frame), and `cx.plot.spectrogram_figure` draws the log-mel spectrogram,
        per-branch Grad-CAM at a shallow block (a third of the depth) and the last block,
        rollout, gradient rollout, the head-by-branch matrix, and the importance of each branch
        over time and over frequency.
    """),
    code('''
        with cx.Explainer(model, class_names=CLASS_NAMES) as explainer:
            exp = explainer.explain(x.to(DEVICE), head=("fused", "cnn", "transformer"),
                                    methods=("gradcam", "rollout", "grad_rollout"),
                                    image=folded[None, :, :, None], meta=meta)
        top = exp.top_classes("fused", k=3)[0]
        print("prediction (fused head): "
              + ", ".join(f"{exp.class_name(i)} {p:.1%}" for i, p in top))
        cx.plot.spectrogram_figure(exp)
    '''),
    md("""
        ## Where the branches look, and where the sound is

        Each map unfolded to (mel band, frame): the time and the frequency it weighs most, and
        (for the bundled clip, whose ground truth is known) the share of its energy on the
        deciding event and on the marker, next to the share of the plane those cover (what a
        map spread evenly would get).
    """),
    code('''
        seconds_per_frame = fold["hop_length"] / fold["sr"]
        centres = cx.audio.band_centres(meta["audio"])
        rows = []
        maps = [("gradcam", branch, model.depth, "fused") for branch in ("cnn", "transformer")]
        maps += [("rollout", "transformer", None, None), ("grad_rollout", "transformer", None, "fused")]
        for method, branch, block, head in maps:
            tf = exp.unfolded(method, branch, block, head=head)[0]  # (mel band, frame)
            tf = np.nan_to_num(np.asarray(tf, dtype=np.float64))
            over_time, over_freq = tf.mean(0), tf.mean(1)
            row = (f"| {method} {branch}{'' if block is None else f' block {block}'} "
                   f"| {int(over_time.argmax()) * seconds_per_frame:.2f} s | {centres[int(over_freq.argmax())]:.0f} Hz |")
            if MASKS is not None:
                energy = tf - tf.min()
                total = energy.sum() or 1.0
                row += (f" {energy[MASKS['event']].sum() / total:.0%} | {energy[MASKS['marker']].sum() / total:.0%} |")
            rows.append(row)
        header = "| map | most important time | most important frequency |"
        rule = "|---|---|---|"
        if MASKS is not None:
            header += (f" energy on the event ({MASKS['event'].mean():.0%} of the plane) "
                       f"| on the marker ({MASKS['marker'].mean():.1%}) |")
            rule += "---|---|"
        Markdown("\\n".join([header, rule, *rows]))
    '''),
    md("""
        ## With the command line

            conformer-xai explain examples/sounds/clip_000.wav --out out/

        explains a wav with the embedded `conformer_micro_audio` (the default for audio inputs
        when no `--model` or `--checkpoint` is given), writing the same figure and a JSON summary
        (with the probabilities, the audio settings and the fold). With your own checkpoint:
        `conformer-xai explain clip.wav --checkpoint checkpoint.pth --size-mismatch resize`.
        `--audio-config settings.json` changes any front-end setting (torchlibrosa's names) and
        `--frames 448` pads or crops clips to 224 x 224 as the fork's `apply_padding` does. A raw
        `.npy` spectrogram in dB is fed as it is. `conformer-xai evaluate --audio` scores every
        method against the sound scenes' masks.
    """),
]


NB07 = [
    md("""
        # 07 · Branch flow: which branch decided, and how much did each borrow from the other

        Conformer's two branches exchange features in every block: FCU down adds the CNN map
        (1x1 conv, average pooling, LayerNorm, GELU) to the tokens before each transformer block,
        and FCU up adds the tokens (1x1 conv, BN, ReLU, nearest upsampling) to the CNN map inside
        the next CNN block. Rollout sees only attention, Grad-CAM only one tap at a time; neither
        says where the evidence went.

        `lrp` follows the relevance of the target logit backwards through *every* path of the
        model (conservative propagation, Ali et al., ICML 2022: attention weights and
        LayerNorm's `1/sigma` held constant, the GELU gate held constant, ReLU passed, the
        epsilon rule on convolutions and linear layers, batch norm passed, residual additions
        and both FCUs split in proportion to their inputs' contributions). It is conservative:
        what reaches the input is the logit, less what the biases absorbed. Because the flow is
        conserved, it can be *accounted for*: the branch-flow table says, per block, how much
        relevance stays on each branch, how much crosses through each FCU, and how much the
        biases absorbed. `attnlrp` (Achtibat et al., ICML 2024) is the second variant.
    """),
    md("## Parameters"),
    code('''
        MODEL_WEIGHTS = "embedded"  # "embedded" (small model trained on synthetic scenes), "imagenet"
                                    # (published weights, downloaded once), "random", or the path of a
                                    # Conformer checkpoint (.pth / .pt / .safetensors)
        CONFORMER_NAME = "conformer_small_patch16"  # architecture for "imagenet" and checkpoints
        IMAGE = None      # an image file; None: a generated benchmark scene (embedded / random) or
                          # examples/photos/chelsea.png (imagenet)
        SCENE_INDEX = 8   # benchmark scene used when IMAGE is None (8: a red-headed bird)
        DEVICE = "cpu"
    ''', "parameters"),
    FAST_NOTE,
    code('''
        %matplotlib inline
        import os
        import tempfile
        from pathlib import Path

        import numpy as np
        import torch
        from IPython.display import Markdown, display
        from PIL import Image

        import conformer_xai as cx
        from conformer_xai.data import class_names_for
        from conformer_xai.synthetic import SyntheticScenes

        FAST = os.environ.get("CONFORMER_XAI_FAST") == "1"
        N_SCENES = 4 if FAST else 24  # scenes for the branch-share summary
        torch.manual_seed(0);
    '''),
    code('''
        SYNTHETIC = MODEL_WEIGHTS in ("embedded", "random")
        name = "conformer_micro_patch16" if SYNTHETIC else CONFORMER_NAME
        if MODEL_WEIGHTS in ("embedded", "imagenet", "random"):
            model = cx.load_model(name, weights=MODEL_WEIGHTS, device=DEVICE)
        else:
            model = cx.load_model(name, checkpoint=MODEL_WEIGHTS, device=DEVICE)
        print(model.model_name, "weights:", model.weights_source)
    '''),
    IMAGE_HELPERS,
    MARKDOWN_TABLE,
    md("""
        ## One explanation with `lrp`, `attnlrp`, TransCAM and Grad-CAM

        `lrp` and `attnlrp` each run one modified backward per head in a pass of their own (their
        backward differs from the plain gradient, so they cannot share the Grad-CAM pass). The
        explanation keeps the pixel relevance (`lrp/<head>`, signed in `raw`, its positive part
        in `maps`), the relevance at every tap of both branches (`lrp/<head>/<branch>/<k>`) and
        the branch-flow table (`exp.flows[head]`).
    """),
    code('''
        x, shown = cx.load_image(image_path, model)
        x = x.to(DEVICE)
        with cx.Explainer(model, class_names=class_names_for(model)) as explainer:
            exp = explainer.explain(x, head=("fused", "cnn", "transformer"),
                                    methods=["lrp", "attnlrp", "transcam", "gradcam"], image=shown[None])
        print("target:", exp.class_name(int(exp.target[0])))
    '''),
    md("""
        ### Conservation

        The input relevance of each head, against its target logit. What is missing was absorbed
        by the biases (batch norm shifts, linear and convolution biases, the class token) and by
        the epsilon stabiliser; `attnlrp`'s softmax rule absorbs more by design. On a Conformer
        with zero biases and class token the ratio is 1 (the test suite checks it within 5 %).
    """),
    code('''
        rows = []
        for variant in ("lrp", "attnlrp"):
            for head, c in exp.meta[f"{variant}_conservation"].items():
                rows.append({"variant": variant, "head": head, "target logit": c["logit"][0],
                             "input relevance": c["relevance"][0], "ratio": c["ratio"][0],
                             "absorbed share": c["absorbed_share"][0]})
        table(rows, ["variant", "head", "target logit", "input relevance", "ratio", "absorbed share"])
    '''),
    md("""
        ### The branch-flow table (fused head)

        Read from block 12 (next to the head) down to block 1. Per block: `cnn_in` and
        `transformer_in` enter the block from above on each lane; `fcu_up` is the relevance that
        reached the CNN (fusion) block through FCU up, i.e. came from the tokens; `fcu_down` the
        relevance that reached the transformer block through FCU down, i.e. came from the CNN
        map; `cnn_stays` / `transformer_stays` leave the block on their own lane; `absorbed` went
        to biases. Each row adds up: stays + crossings + absorbed = cnn_in + transformer_in.
        Values are in logit units; the shares of the target logit are in the figure below.
    """),
    code('''
        fields = ["block", "cnn_in", "transformer_in", "cnn_stays", "transformer_stays",
                  "fcu_down", "fcu_up", "absorbed"]
        flow = [{f: (r[f] if f == "block" else r[f][0]) for f in fields} for r in exp.flows["fused"]]
        for r in flow:
            assert abs(sum(r[f] for f in fields[3:]) - r["cnn_in"] - r["transformer_in"]) < 1e-3
        table(flow[::-1], fields)
    '''),
    md("""
        ### The flow as two lanes

        `cx.plot.branch_flow` draws the table: the CNN lane on top, the transformer lane below,
        each segment as thick as the relevance it carries; the arrows at each block are the FCU
        crossings, the grey numbers what the block absorbed.
    """),
    code('''
        for head in exp.flows:
            display(cx.plot.branch_flow(exp, head=head))
    '''),
    md("""
        ## Where the relevance is: per block, and at the input

        The relevance at every tap, as Grad-CAM's grid shows it: CNN taps at each block's
        output, transformer taps at each block's input tokens (the class token's relevance is
        not drawn). Then the input-resolution maps side by side: LRP, AttnLRP, TransCAM (the CNN
        head's CAM refined by the summed attention) and Grad-CAM at the last CNN block.
    """),
    code('''
        display(cx.plot.block_strip(exp, "lrp", "cnn", head="fused"))
        display(cx.plot.block_strip(exp, "lrp", "transformer", head="fused"))
    '''),
    code('''
        from matplotlib.figure import Figure

        fig = Figure(figsize=(12, 3.4), layout="constrained")
        axes = fig.subplots(1, 4)
        panels = [("LRP · fused", exp.get("lrp", head="fused")),
                  ("AttnLRP · fused", exp.get("attnlrp", head="fused")),
                  ("TransCAM", exp.get("transcam", "cnn")),
                  ("Grad-CAM · cnn 12 · fused", exp.get("gradcam", "cnn", 12, head="fused"))]
        for ax, (title, m) in zip(axes, panels):
            cx.plot.map_panel(m[0], shown, title=title, ax=ax, colorbar=False)
        fig
    '''),
    md("""
        ## Which branch carries the decision? Over several scenes

        At the stem, relevance enters the network through two input paths: the CNN branch's
        first block (`conv_1`) and the transformer's patch embedding. Block 1's `cnn_stays` and
        `transformer_stays` are what each path carries; their shares (signed: a path can carry
        net negative evidence) are `exp.meta["branch_share"]`, and `conformer-xai explain`
        prints them. Here, per head, the median over benchmark scenes.
    """),
    code('''
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
            display(table(rows, list(rows[0])))
        else:
            print("the summary over scenes needs the synthetic-scene models (MODEL_WEIGHTS embedded or random)")
    '''),
]


NOTEBOOKS = {
    "01_feature_maps": NB01,
    "02_gradcam_branches": NB02,
    "03_attention_rollout": NB03,
    "04_branch_comparison": NB04,
    "05_your_own_checkpoint": NB05,
    "06_spectrogram_conformer": NB06,
    "07_branch_flow": NB07,
}


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` (without outputs), with stable cell ids."""
    cells = []
    for i, spec in enumerate(NOTEBOOKS[name]):
        cell_id = f"{name[:2]}-{i:02d}"
        if spec[0] == "markdown":
            cell = new_markdown_cell(spec[1], id=cell_id)
        else:
            cell = new_code_cell(spec[1], id=cell_id)
            if spec[2]:
                cell.metadata["tags"] = list(spec[2])
        cells.append(cell)
    nb = new_notebook(cells=cells, metadata={"kernelspec": KERNELSPEC,
                                             "language_info": LANGUAGE_INFO})
    nbformat.validate(nb)
    return nb


def render(name: str) -> str:
    """The ``.ipynb`` text of notebook ``name``, as written to disk."""
    return nbformat.writes(build(name)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if a notebook differs from this script")
    args = parser.parse_args(argv)
    stale = []
    for name in NOTEBOOKS:
        path = HERE / f"{name}.ipynb"
        text = render(name)
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"out of date (run python notebooks/build.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
