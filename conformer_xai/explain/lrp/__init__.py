"""Layer-wise relevance propagation for Conformer, timm ResNet and timm ViT/DeiT.

:mod:`.rules` holds the rules (gradient x input form), :mod:`.patch` swaps them into a model for
one pass, :mod:`.flows` reads the Conformer's branch flow, :mod:`.run` runs a pass per variant.
"""

from .flows import FLOW_FIELDS, branch_share
from .patch import VARIANTS, check_supported, lrp_rules
from .run import DEFAULT_EPSILON, LRPResult, run_lrp

__all__ = ["run_lrp", "LRPResult", "lrp_rules", "check_supported", "VARIANTS", "FLOW_FIELDS",
           "branch_share", "DEFAULT_EPSILON"]
