"""Models: the Conformer family, the small models trained on synthetic scenes, and their weights.

Importing this package registers every model name with timm's registry.
"""

from .conformer import CONFORMER_VARIANTS, BranchFeatures, BranchLogits, Conformer
from .conformer import _register as _register_conformer

_register_conformer()

from . import micro  # noqa: E402,F401  (registers the small models)

__all__ = ["Conformer", "BranchLogits", "BranchFeatures", "CONFORMER_VARIANTS"]
