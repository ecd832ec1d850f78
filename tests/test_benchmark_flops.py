"""The benchmarks' FLOP counter: CPU attention is counted as the same attention written with matmuls."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _common import flop_counter  # noqa: E402


def test_cpu_attention_counts_as_its_matmuls():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 33, 8, requires_grad=True) for _ in range(3))
    with flop_counter() as fused:
        torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()
    with flop_counter() as naive:  # the math path: two batched matmuls forward, four backward
        (torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, dim=-1) @ v).sum().backward()
    counts = {str(op): n for op, n in fused.get_flop_counts()["Global"].items()}
    forward = 2 * (2 * 2 * 4 * 33 * 33 * 8)  # QK^T and PV: 2 * batch * heads * L * L * d each
    assert counts["aten._scaled_dot_product_flash_attention_for_cpu"] == forward
    assert naive.get_total_flops() == 3 * forward
    # torch's SDPA backward formula also counts the recomputed scores (flash attention keeps no P matrix)
    assert counts["aten._scaled_dot_product_flash_attention_for_cpu_backward"] == 2.5 * forward


def test_depthwise_conv_backward_counts_like_its_forward():
    x = torch.randn(1, 8, 16, 16, requires_grad=True)
    conv = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    with flop_counter() as counter:
        conv(x).sum().backward()
    forward = 2 * 8 * 16 * 16 * 9  # per output element: 9 multiply-adds over one input channel
    counts = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    assert counts["aten.convolution"] == forward
    assert counts["aten.convolution_backward"] == 2 * forward  # input and weight gradients
