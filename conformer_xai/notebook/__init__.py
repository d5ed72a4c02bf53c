"""Helpers the tutorial notebooks share (``notebooks/*.py``), tested like the rest of the package.

They keep the notebooks' cells to what a user would write: choosing models and an image from the
parameters cell, small tables, the few figures and measurements the plot module does not draw,
the synthetic spectrograms of notebook 05 and the map explorer of notebook 02. Nothing here is
needed outside a notebook; the library's own API is ``conformer_xai`` and ``conformer_xai.plot``.
"""

from .calls import CALL_CLASSES, call_spectrogram, write_call_split
from .explorer import MapExplorer
from .figures import attention_heads_figure, method_rows_figure, rollout_options_figure
from .inputs import (
    NAMED_WEIGHTS,
    SYNTHETIC_WEIGHTS,
    benchmark_scene,
    choose_image,
    examples_dir,
    explain_image,
    load_batch,
    load_weights,
    model_names,
    work_folder,
)
from .measures import (
    accuracy,
    deepest_nonzero_block,
    fcu_down_ratios,
    paper_blocks,
    part_body_off_rows,
    unit_range,
)
from .tables import MarkdownText, markdown_table

__all__ = [
    "CALL_CLASSES", "call_spectrogram", "write_call_split", "MapExplorer",
    "attention_heads_figure", "method_rows_figure", "rollout_options_figure", "NAMED_WEIGHTS",
    "SYNTHETIC_WEIGHTS", "benchmark_scene", "choose_image", "examples_dir", "explain_image",
    "load_batch", "load_weights", "model_names", "work_folder", "accuracy", "deepest_nonzero_block",
    "fcu_down_ratios", "paper_blocks", "part_body_off_rows", "unit_range", "MarkdownText",
    "markdown_table",
]
