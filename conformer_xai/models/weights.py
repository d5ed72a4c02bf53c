"""Weights: every source (local file, ImageNet download, embedded, random), one import.

This module gathers the public names of the modules that do the work:

* :mod:`~conformer_xai.models.loader`: :func:`load_model`, :func:`convert_state_dict`;
* :mod:`~conformer_xai.models.checkpoint_files`: reading a local checkpoint safely
  (``.pth``/``.pt``/``.bin`` with ``torch.load(..., weights_only=True)``, or safetensors,
  recognised by content whatever the suffix; flat, or wrapped under ``"model"``,
  ``"state_dict"`` or ``"model_ema"``);
* :mod:`~conformer_xai.models.hub`: ``weights="imagenet"``, the published Conformer weights
  whose URLs and sha256 prefixes are in the models' pretrained configs, downloaded with
  :func:`torch.hub.download_url_to_file` (hash-checked, atomic) into torch.hub's cache (base URL
  overridable with ``CONFORMER_XAI_BASE_URL``); timm's own models through timm's download;
* :mod:`~conformer_xai.models.embedded`: ``weights="embedded"``, the small models' shipped weights;
* :mod:`~conformer_xai.models.fit`: checks with clear messages, then timm's ``load_pretrained``
  (a 3-channel stem adapted with :func:`timm.models.adapt_input_conv`, heads of another size
  dropped only with ``new_head=True``);
* :mod:`~conformer_xai.models.catalog` and :mod:`~conformer_xai.models.listing`: the documented
  names, weight choices, published accuracy and :func:`list_models`.
"""

from __future__ import annotations

from .catalog import (
                      COMPARISON_MODELS,
                      CONFORMER_MODELS,
                      EMBEDDED_MODELS,
                      KNOWN_MODELS,
                      WEIGHT_CHOICES,
                      PublishedAccuracy,
)
from .checkpoint_files import load_state_dict_file, read_checkpoint
from .conformer import SIZE_MISMATCH_MODES
from .embedded import load_embedded_state_dict, read_embedded
from .errors import DownloadError, WeightsError, WeightsWarning
from .fit import fit_and_load, infer_checkpoint_config
from .hub import (
                      BASE_URL_ENV,
                      IMAGENET_BASE_URL,
                      IMAGENET_FILES,
                      IMAGENET_URLS,
                      cached_imagenet_path,
                      download_checkpoint,
                      imagenet_checkpoint,
                      imagenet_url,
                      is_cached,
)
from .listing import ModelRow, list_models, published_top1
from .loader import convert_state_dict, load_model

__all__ = [
    "IMAGENET_BASE_URL", "IMAGENET_FILES", "IMAGENET_URLS", "BASE_URL_ENV", "EMBEDDED_MODELS",
    "CONFORMER_MODELS", "COMPARISON_MODELS", "KNOWN_MODELS", "WEIGHT_CHOICES", "PUBLISHED_TOP1",
    "PublishedAccuracy", "ModelRow", "WeightsError", "DownloadError", "WeightsWarning",
    "load_model", "load_state_dict_file", "read_checkpoint", "convert_state_dict",
    "SIZE_MISMATCH_MODES", "infer_checkpoint_config", "load_embedded_state_dict",
    "download_checkpoint", "imagenet_url", "imagenet_checkpoint", "cached_imagenet_path",
    "is_cached", "list_models",
]

#: Top-1 accuracy in the paper and of the file that ``weights="imagenet"`` loads.
PUBLISHED_TOP1 = published_top1()

# the names the tests of the fitting and the embedded reader use
_fit_and_load = fit_and_load
_read_embedded = read_embedded
