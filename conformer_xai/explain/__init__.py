"""The explanation engine: :class:`Explainer`, its methods, and the :class:`Explanation` result."""

from .explainer import Explainer
from .methods import DEFAULT_METHODS, METHODS
from .methods.rollout import RolloutOptions
from .result import Explanation

__all__ = ["Explainer", "Explanation", "RolloutOptions", "METHODS", "DEFAULT_METHODS"]
