"""Cascading model-parameter randomisation on a small real Conformer."""

import pytest
import torch
from torch import nn

from conformer_xai.metrics import cascade_layers, randomisation_test, randomised_copy
from conformer_xai.models.conformer import Conformer


@pytest.fixture(scope="module")
def model() -> Conformer:
    torch.manual_seed(0)
    return Conformer(patch_size=16, num_classes=5, base_channel=16, channel_ratio=1,
                     embed_dim=48, depth=6, num_heads=3).eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def input_gradient(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """Vanilla gradient saliency (Simonyan et al. 2014): |d logit / d x|, max over channels."""
    x = x.clone().requires_grad_(True)
    logits = model(x)
    score = logits.gather(1, torch.as_tensor(target).view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(score, x)
    return grad.abs().amax(dim=1)


def image_edges(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """A map that ignores the model: horizontal image gradient (fails the sanity check)."""
    return (x[..., 1:] - x[..., :-1]).abs().sum(dim=1)


def test_cascade_covers_every_parameter_from_the_top(model):
    groups = cascade_layers(model)
    labels = [label for label, _ in groups]
    assert labels == ["head", "block_6", "block_5", "block_4", "block_3", "block_2", "block_1",
                      "stem"]
    covered = set()
    for _, names in groups:
        for name in names:
            try:
                covered |= {f"{name}.{p}" for p, _ in model.get_submodule(name).named_parameters()}
            except AttributeError:
                covered.add(name)
    assert covered == {name for name, _ in model.named_parameters()}


def test_generic_cascade_is_reverse_order_with_own_parameters():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(4, 4)
            self.token = nn.Parameter(torch.zeros(4))
            self.blocks = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
            self.head = nn.Linear(4, 2)

    assert cascade_layers(Tiny()) == [("head", ("head",)), ("blocks.2", ("blocks.2",)),
                                      ("blocks.0", ("blocks.0",)), ("embed", ("embed", "token"))]


def test_randomisation_lowers_similarity_and_leaves_the_model_alone(model, x):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_state = torch.get_rng_state()
    steps = randomisation_test(model, input_gradient, x, [1, 3], seed=0)
    assert [s.layer for s in steps] == [label for label, _ in cascade_layers(model)]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(torch.get_rng_state(), rng_state)
    rho = torch.stack([s.spearman for s in steps]).mean(dim=1)
    sim = torch.stack([s.ssim for s in steps]).mean(dim=1)
    assert steps[0].spearman.shape == (2,)
    assert (rho < 0.9).all() and (sim < 0.9).all()
    # the full cascade leaves less of the original map than randomising the head alone
    # (measured: Spearman 0.54 -> 0.15, SSIM 0.34 -> 0.07)
    assert rho[-1] < rho[0] - 0.2 and sim[-1] < sim[0] - 0.1
    again = randomisation_test(model, input_gradient, x, [1, 3], layers=["head", "block_6"],
                               seed=0)
    torch.testing.assert_close(again[1].spearman, steps[1].spearman)


def test_model_independent_map_stays_identical(model, x):
    steps = randomisation_test(model, image_edges, x, 0, layers=["head", "block_6", "stem"])
    for s in steps:
        torch.testing.assert_close(s.spearman, torch.ones(2))
        torch.testing.assert_close(s.ssim, torch.ones(2))


def test_randomised_copy_changes_weights_not_the_original(model):
    clone = randomised_copy(model, layers=["head", ("stem conv", ["conv1"])], seed=3)
    assert clone is not model
    assert not torch.equal(clone.conv_cls_head.weight, model.conv_cls_head.weight)
    assert not torch.equal(clone.conv1.weight, model.conv1.weight)
    assert torch.equal(clone.conv_trans_6.trans_block.attn.qkv.weight,
                       model.conv_trans_6.trans_block.attn.qkv.weight)
    same_seed = randomised_copy(model, layers=["head", ("stem conv", ["conv1"])], seed=3)
    assert torch.equal(clone.conv1.weight, same_seed.conv1.weight)


def test_unknown_layer_is_a_value_error(model, x):
    with pytest.raises(ValueError, match="unknown layer 'block_99'.*'head'"):
        randomisation_test(model, input_gradient, x, 0, layers=["block_99"])
    with pytest.raises(ValueError, match="not one string"):
        randomised_copy(model, layers="head")
