"""The Conformer variants by name: their constructor arguments (no torch, no model code)."""

from __future__ import annotations

__all__ = ["CONFORMER_VARIANTS", "FORK_VARIANTS"]

#: The registered variants and their constructor arguments (``depth`` 12 unless given).
CONFORMER_VARIANTS: dict[str, dict] = {
    "conformer_tiny_patch16": dict(patch_size=16, channel_ratio=1, embed_dim=384, num_heads=6),
    "conformer_small_patch16": dict(patch_size=16, channel_ratio=4, embed_dim=384, num_heads=6),
    "conformer_small_patch32": dict(patch_size=32, channel_ratio=4, embed_dim=384, num_heads=6),
    "conformer_base_patch16": dict(patch_size=16, channel_ratio=6, embed_dim=576, num_heads=9),
    # the spectrogram fork's (Conformer_xai) smaller variants; no published weights
    "conformer_tinytiny_patch16": dict(patch_size=16, channel_ratio=1, embed_dim=384, num_heads=3,
                                       depth=6),
    "conformer_tinytinytiny_patch16": dict(patch_size=16, channel_ratio=1, embed_dim=192,
                                           num_heads=3, depth=3),
}

#: The fork's variants: raw log-mel spectrograms in dB (no normalisation), 1 channel repeated.
FORK_VARIANTS = ("conformer_tinytiny_patch16", "conformer_tinytinytiny_patch16")
