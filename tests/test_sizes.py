"""The one "HxW" reader (conformer_xai.sizes), used by the CLI's --input-size and the benchmark."""

from __future__ import annotations

import pytest

from conformer_xai.sizes import parse_hw


def test_parse_hw_reads_hxw_and_squares() -> None:
    assert parse_hw("224x288") == (224, 288)
    assert parse_hw(" 128 X 512 ") == (128, 512)
    assert parse_hw("96") == (96, 96)


@pytest.mark.parametrize("bad", ["224x", "x224", "axb", "-3x4", "224x288x3", "", "1.5x2"])
def test_parse_hw_refuses_what_is_not_a_size(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a size; write HxW"):
        parse_hw(bad)
