"""Weights: every source (local file, ImageNet download, embedded, random), key conversion, cache."""

from __future__ import annotations

IMAGENET_BASE_URL = "https://download.openmmlab.com/mmclassification/v0/conformer/"
IMAGENET_FILES = {
    "conformer_tiny_patch16": "conformer-tiny-p16_3rdparty_8xb128_in1k_20211206-f6860372.pth",
    "conformer_small_patch16": "conformer-small-p16_3rdparty_8xb128_in1k_20211206-3065dcf5.pth",
    "conformer_small_patch32": "conformer-small-p32_8xb128_in1k_20211206-947a0816.pth",
    "conformer_base_patch16": "conformer-base-p16_3rdparty_8xb128_in1k_20211206-bfdf8637.pth",
}
IMAGENET_URLS = {name: IMAGENET_BASE_URL + f for name, f in IMAGENET_FILES.items()}
