"""Downloads and the cache: the published Conformer weights and timm's pretrained weights.

The Conformers' URLs come from their pretrained configs (timm's registry); each file name ends
in the first hex digits of the file's sha256, which :func:`torch.hub.download_url_to_file`
checks while it writes the file atomically (a temporary file moved into place) into torch.hub's
cache (``$TORCH_HOME/hub/checkpoints``). The base URL can be replaced with the environment
variable ``CONFORMER_XAI_BASE_URL`` (mirrors, tests). A file already in the cache is trusted,
as it was verified when it was written. For timm's own models, one quick request without
retries tells at once when the Hugging Face Hub cannot be reached.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import re
import socket
import sys
import urllib.error
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import torch

from ..errors import Setting
from .catalog import CONFORMER_MODELS, EMBEDDED_MODELS, unknown_name_message
from .embedded import embedded_resource
from .errors import DownloadError, WeightsError, one_line

__all__ = ["IMAGENET_BASE_URL", "IMAGENET_FILES", "IMAGENET_URLS", "BASE_URL_ENV",
           "download_checkpoint", "imagenet_url", "imagenet_checkpoint", "cached_imagenet_path",
           "is_cached", "check_hub_reachable", "quiet_hub_logs"]


def _published_urls() -> dict[str, str]:
    from timm.models import get_pretrained_cfg

    return {name: get_pretrained_cfg(name).url for name in CONFORMER_MODELS}


#: Download URL of each Conformer's ImageNet weights (from its pretrained config).
IMAGENET_URLS = _published_urls()
#: The file names (``...-<sha256 prefix>.pth``); the cache and the download use these.
IMAGENET_FILES = {name: url.rpartition("/")[2] for name, url in IMAGENET_URLS.items()}
IMAGENET_BASE_URL = next(iter(IMAGENET_URLS.values())).rpartition("/")[0] + "/"
#: Environment variable that replaces :data:`IMAGENET_BASE_URL` (mirrors, tests).
BASE_URL_ENV = "CONFORMER_XAI_BASE_URL"
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")
_TORCH_HASH_ERROR = re.compile(r'invalid hash value .*got "([0-9a-f]+)"')


def imagenet_url(name: str) -> str:
    """Download URL of a Conformer's ImageNet weights (honours ``CONFORMER_XAI_BASE_URL``)."""
    _check_conformer(name)
    base = os.environ.get(BASE_URL_ENV) or IMAGENET_URLS[name].rpartition("/")[0]
    return base.rstrip("/") + "/" + IMAGENET_FILES[name]


def cached_imagenet_path(name: str) -> Path:
    """Where the ImageNet weights of a Conformer live in torch.hub's cache (may not exist)."""
    _check_conformer(name)
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILES[name]


def _check_conformer(name: str) -> None:
    if name not in IMAGENET_FILES:
        raise ValueError(f"no OpenMMLab ImageNet weights for {name!r}; available for: "
                         f"{', '.join(CONFORMER_MODELS)}")


def _hash_prefix(filename: str) -> str:
    m = _HASH_IN_NAME.search(filename)
    if not m:
        raise ValueError(f"file name {filename!r} carries no sha256 prefix (expected "
                         f"'...-<hex>.<ext>')")
    return m.group(1)


def download_checkpoint(url: str, expected_sha256_prefix: str,
                        dest_dir: str | os.PathLike, timeout: float = 60.0) -> Path:
    """Download ``url`` into ``dest_dir`` atomically, verifying its sha256.

    :func:`torch.hub.download_url_to_file` streams the file to a temporary file in ``dest_dir``
    while hashing it, and moves it to its final name (the URL's last component) only when its
    sha256 starts with ``expected_sha256_prefix``; on any failure the temporary file is removed.
    The progress bar shows when stderr is a terminal. ``timeout`` (seconds) bounds every
    connect and read (torch's function sets none, so a server that stops answering would hang).

    Raises:
        DownloadError: The request failed (offline, refused, HTTP error, broken off).
        WeightsError: The content's sha256 does not start with the expected prefix.
    """
    filename = Path(urllib.parse.urlparse(url).path).name
    if not filename:
        raise ValueError(f"URL has no file name: {url}")
    expected = expected_sha256_prefix.lower()
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / filename
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        torch.hub.download_url_to_file(url, str(dest), hash_prefix=expected,
                                       progress=sys.stderr.isatty())
    except RuntimeError as e:
        found = _TORCH_HASH_ERROR.search(str(e))
        if found is None:
            raise DownloadError(f"download of {url} broke off: {one_line(e)}",
                                f"broke off: {one_line(e)}") from e
        raise WeightsError(
            f"sha256 of {url} is {found.group(1)[:16]}..., but its name promises {expected}...: "
            f"the download is incomplete, corrupt or not the published file; nothing was "
            f"written to {dest_dir}") from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise DownloadError(f"cannot download {url}: {_reason(e)}", _reason(e)) from e
    except Exception as e:  # http.client.IncompleteRead and friends
        raise DownloadError(f"download of {url} broke off: {one_line(e)}",
                            f"broke off: {one_line(e)}") from e
    finally:
        socket.setdefaulttimeout(previous)
    return dest


def _reason(e: BaseException) -> str:
    reason = getattr(e, "reason", None)
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    return one_line(reason if reason is not None else e)


def imagenet_checkpoint(name: str) -> Path:
    """Path of a Conformer's ImageNet weights in the cache, downloading them when missing.

    A file already in the cache is used without network and without re-hashing (it was
    verified when it was written there).

    Raises:
        WeightsError: Offline with nothing cached (one line naming the URL, the cache path and
            the ``--checkpoint PATH`` alternative), or the download's sha256 does not match.
    """
    path = cached_imagenet_path(name)
    if path.is_file():
        return path
    url = imagenet_url(name)
    try:
        return download_checkpoint(url, _hash_prefix(IMAGENET_FILES[name]), path.parent)
    except DownloadError as e:
        raise WeightsError(
            f"cannot download the ImageNet weights of {name} from {url} ({e.reason}) and none are "
            f"cached at {path}; put the file there or pass " "{checkpoint} with a local copy",
            checkpoint=Setting("checkpoint", placeholder="PATH")) from e


def is_cached(name: str) -> bool:
    """Whether the default pretrained weights of ``name`` are available without network.

    Conformers: the OpenMMLab file in torch.hub's cache. Embedded models: the shipped file.
    timm models: timm's Hugging Face or torch.hub cache.
    """
    if name in CONFORMER_MODELS:
        return cached_imagenet_path(name).is_file()
    if name in EMBEDDED_MODELS:
        return embedded_resource(name).is_file()
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(name):
        raise ValueError(unknown_name_message(name))
    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return False
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(cfg.hf_hub_id, filename), str):
                return True
    if cfg.url:
        filename = Path(urllib.parse.urlparse(cfg.url).path).name
        return (Path(torch.hub.get_dir()) / "checkpoints" / filename).is_file()
    return False


#: Seconds to wait for the Hugging Face Hub before deciding it cannot be reached.
_HUB_PROBE_TIMEOUT = 10.0


def check_hub_reachable(name: str) -> None:
    """Raise WeightsError when the Hugging Face Hub holding ``name``'s weights cannot be reached.

    One request without retries (huggingface_hub would otherwise retry each file five times with
    backoff, logging every attempt). A reply of any HTTP status counts as reachable; the download
    then goes its normal way. Nothing is checked in offline mode (``HF_HUB_OFFLINE``) or for
    weights not hosted on the Hub.
    """
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        return
    import huggingface_hub
    from huggingface_hub import constants as hub_constants
    from huggingface_hub.utils import HfHubHTTPError

    if getattr(hub_constants, "HF_HUB_OFFLINE", False):
        return
    repo_id, _, revision = cfg.hf_hub_id.partition("@")
    filename = getattr(cfg, "hf_hub_filename", None) or "model.safetensors"
    url = huggingface_hub.hf_hub_url(repo_id, filename, revision=revision or None)
    kwargs: dict[str, object] = {"timeout": _HUB_PROBE_TIMEOUT}
    if "retry_on_errors" in inspect.signature(huggingface_hub.get_hf_file_metadata).parameters:
        kwargs["retry_on_errors"] = False
    try:
        with quiet_hub_logs():
            huggingface_hub.get_hf_file_metadata(url, **kwargs)
    except HfHubHTTPError:
        return  # the Hub answered (e.g. 404 for a .bin-only repo): let timm go on
    except Exception as e:  # connection refused, name resolution, timeout, proxy, TLS
        host = urllib.parse.urlparse(url).netloc
        raise WeightsError(
            f"cannot load timm's pretrained weights for {name}: {host} cannot be reached "
            f"({type(e).__name__}: {one_line(e, 150)}) and they are not cached; pass "
            "{checkpoint} with a local copy",
            checkpoint=Setting("checkpoint", placeholder="PATH")) from e


@contextlib.contextmanager
def quiet_hub_logs() -> Iterator[None]:
    """Silence huggingface_hub's warnings (per-retry chatter) while in the block."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(level)
