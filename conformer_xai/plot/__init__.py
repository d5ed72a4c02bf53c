"""Figures of explanations (matplotlib): overlays, block strips, the head-by-branch matrix,
comparisons, the paper's feature-map figure and the CLI's one-figure summary.

Every function returns a :class:`matplotlib.figure.Figure` and never calls ``show``. The
figures are not registered with pyplot: return one in Jupyter to display it, save it with
``fig.savefig(path)``; no ``plt.close`` is needed. Maps use the paper's ``jet`` colour map over
the image the model saw.
"""

from .cascade import cascade_figure
from .figures import block_agreement, block_strip, compare, head_branch_matrix
from .flow import branch_flow
from .panels import METHOD_LABELS, NotebookFigure, map_panel, overlay, spearman
from .paper import default_blocks, model_role, paper_figure
from .report import explanation_figure, top_predictions_text, weights_note
from .spectro import spectrogram_figure, tf_map

__all__ = [
    "overlay", "map_panel", "block_strip", "head_branch_matrix", "compare", "block_agreement",
    "paper_figure", "model_role", "default_blocks", "explanation_figure", "weights_note",
    "top_predictions_text", "spearman", "METHOD_LABELS", "NotebookFigure", "branch_flow",
    "spectrogram_figure", "tf_map", "cascade_figure",
]
