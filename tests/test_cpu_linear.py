"""kernels/linear: the CPU inference fast path (oneDNN on a prepacked weight) against its reference
(``F.linear``), when it is taken, and that it follows every change of the weight."""

import copy

import pytest
import torch

from dllm import kernels
from dllm.kernels.linear import (
    ONE_ROW_MIN_OUT,
    Linear,
    bf16_available,
    linear_reference,
    onednn as onednn_mod,
    onednn_available,
)


def test_the_fast_path_exists_here():
    assert onednn_available(), "torch's oneDNN linear ops are missing: every CPU linear runs the reference"


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(3, 1), (2, 9), (1, 33), (4, 17)])
def test_packed_equals_the_reference(shape, bias):
    torch.manual_seed(0)
    lin = Linear(96, 160, bias=bias)
    x = torch.randn(*shape, 96)
    with torch.no_grad():
        fast = lin(x)
    assert lin in onednn_mod._PACKED  # the fast path ran
    ref = linear_reference(x, lin.weight, lin.bias)
    assert fast.shape == ref.shape == (*shape, 160)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not bf16_available(), reason="oneDNN has no bfloat16 kernels for this CPU")
@pytest.mark.parametrize("shape", [(1, 1), (2, 9), (1, 33)])
def test_packed_bfloat16_is_as_close_to_exact_as_the_reference(shape):
    """bf16 weights and inputs: both products accumulate in fp32 and round once, in different orders, so
    each is compared with the exact (float64) product of the same bf16 numbers: neither is off by more
    than bf16's rounding of the result. One row takes the packed path too (a bf16 AR step)."""
    torch.manual_seed(0)
    lin = Linear(96, 160, bias=True).to(torch.bfloat16)
    x = torch.randn(*shape, 96).to(torch.bfloat16)
    exact = torch.nn.functional.linear(x.double(), lin.weight.double(), lin.bias.double())
    with torch.no_grad():
        fast = lin(x)
    assert lin in onednn_mod._PACKED and fast.dtype == torch.bfloat16
    ref = linear_reference(x, lin.weight, lin.bias)
    bound = exact.abs() * 2 ** -8 + 1e-3  # half a bf16 ulp of the result, plus fp32 summation slack
    assert ((fast.double() - exact).abs() <= bound).all()
    assert ((ref.double() - exact).abs() <= bound).all()


def test_one_row_takes_onednn_only_on_wide_products():
    """An AR step at batch 1: MKL's matrix-vector product beats oneDNN on narrow layers, not on the head."""
    torch.manual_seed(0)
    narrow, wide = Linear(64, 96, bias=False), Linear(64, ONE_ROW_MIN_OUT, bias=False)
    x = torch.randn(1, 1, 64)
    with torch.no_grad():
        assert torch.equal(narrow(x), linear_reference(x, narrow.weight))
        assert narrow not in onednn_mod._PACKED
        torch.testing.assert_close(wide(x), linear_reference(x, wide.weight), rtol=1e-5, atol=1e-5)
        assert wide in onednn_mod._PACKED
        narrow(torch.randn(2, 64))  # two rows: the fast path
        assert narrow in onednn_mod._PACKED


def test_training_other_dtypes_and_forced_torch_take_the_reference():
    lin = Linear(32, 48)
    x = torch.randn(2, 5, 32)
    out = lin(x)  # autograd on: the reference, and gradients flow
    out.sum().backward()
    assert lin.weight.grad is not None and lin not in onednn_mod._PACKED
    with torch.no_grad():
        assert lin.to(torch.float64)(x.double()).dtype == torch.float64
        assert lin not in onednn_mod._PACKED
        lin = lin.float()
        with kernels.use("torch"):
            assert torch.equal(lin(x), linear_reference(x, lin.weight, lin.bias))
        assert lin not in onednn_mod._PACKED


def test_every_change_of_the_weight_repacks():
    """In place (an optimizer step), through ``.data`` (peft's merge; no version bump), a new tensor,
    a copy of the module: each call sees the current weight."""
    torch.manual_seed(0)
    lin = Linear(64, 80, bias=False)
    x = torch.randn(9, 64)

    def check():
        with torch.no_grad():
            torch.testing.assert_close(lin(x), linear_reference(x, lin.weight), rtol=1e-5, atol=1e-5)

    check()
    with torch.no_grad():
        lin.weight.mul_(2.0)
    check()
    lin.weight.data += 0.5
    check()
    lin.weight = torch.nn.Parameter(torch.randn(80, 64))
    check()
    twin = copy.deepcopy(lin)
    twin.weight.data.zero_()
    with torch.no_grad():
        assert torch.count_nonzero(twin(x)) == 0
    check()


def test_a_model_decodes_the_same_with_and_without_it():
    """The embedded model: logits within fp32 rounding of the reference's, and the same generation."""
    import dllm

    model = dllm.load("dllm-tiny")
    ids = torch.randint(3, 40, (3, 24))
    pos, valid = torch.arange(24).expand(3, 24), torch.ones(3, 24, dtype=torch.bool)
    prompts = ["copy: a b c d", "sort: d b a c"]
    with torch.no_grad():
        fast = model(ids, pos, valid)
        fast_gen = dllm.generate(model, prompts, dllm.samplers.ThresholdSampler(threshold=0.9), cache="dual")
        with kernels.use("torch"):
            ref = model(ids, pos, valid)
            ref_gen = dllm.generate(model, prompts, dllm.samplers.ThresholdSampler(threshold=0.9), cache="dual")
    assert any(m in onednn_mod._PACKED for m in model.modules())
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)
    assert fast_gen.text == ref_gen.text


def test_the_vocabulary_head_takes_it_at_inference():
    """vocab_logits on a model head (kernels.linear.Linear): the packed product, against float64; under
    DLLM_KERNELS=torch the (W Hᵀ)ᵀ form tests/test_models.py pins."""
    from dllm.models.core import vocab_logits

    torch.manual_seed(0)
    head = Linear(96, 9000, bias=False)
    h = torch.randn(2, 9, 96)
    want = torch.nn.functional.linear(h.double(), head.weight.double())
    with torch.no_grad():
        got = vocab_logits(head, h)
        assert head in onednn_mod._PACKED
        assert (got.double() - want).abs().max().item() < 1e-4
        with kernels.use("torch"):
            plain = vocab_logits(head, h)
        assert (plain.double() - want).abs().max().item() < 1e-4


@pytest.mark.skipif(not bf16_available(), reason="oneDNN has no bfloat16 kernels for this CPU")
def test_a_bfloat16_model_gives_the_reference_logits_within_bf16_rounding():
    """The embedded model loaded in bf16: packed products at every layer (one row included), logits
    within a few bf16 ulps of the reference's, and the same greedy answers."""
    import dllm

    model = dllm.load("dllm-tiny", dtype="bfloat16")
    ids = torch.randint(3, 40, (2, 24))
    pos, valid = torch.arange(24).expand(2, 24), torch.ones(2, 24, dtype=torch.bool)
    with torch.no_grad():
        fast = model(ids, pos, valid).float()
        with kernels.use("torch"):
            ref = model(ids, pos, valid).float()
    assert any(m in onednn_mod._PACKED and m.weight.dtype == torch.bfloat16 for m in model.modules())
    torch.testing.assert_close(fast, ref, rtol=0.05, atol=0.05 * ref.abs().max().item())
    assert (fast.argmax(-1) == ref.argmax(-1)).float().mean() > 0.95
