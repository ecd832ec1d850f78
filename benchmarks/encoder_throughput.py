"""Encoder throughput of the `cpu` preset: records/s and achieved FLOP/s as a fraction of a dense fp32 matmul.

For each encoder (DNA k-mer transformer, MiniLM text transformer, EfficientNet-Lite0 image CNN) and batch size,
in eval mode under ``torch.inference_mode`` (as embedding extraction runs), the script counts the FLOPs of one
forward pass with ``torch.utils.flop_counter.FlopCounterMode`` and times it, alternating with a dense float32
``torch.mm`` (``--matmul-n`` square) in the same process and thread setting; the reported fraction is the median
over ``--repeats`` of (encoder FLOP/s) / (matmul FLOP/s measured right around it), so machine load cancels out as
far as it can. Target (issue 6): >= 0.5 for the DNA and text transformers.

Variants measured side by side: ``eager`` (what the toolkit runs), for the DNA encoder also ``unchunked-ffn`` (the
same weights with transformers' plain BERT feed-forward, which the toolkit replaces in eval mode by a chunked one,
see :mod:`clibd_toolkit.encoders.dna`), and ``compiled`` (``torch.compile`` of the same encoder, fixed shapes) with
``--compile``; tokenisation cost is reported separately (records/s of the tokenizer).

FLOPs include attention: torch's counter has no formula for the CPU flash-attention kernel, which
``benchmarks/_common.flop_counter`` adds (torch's own SDPA formula).

Inputs: ``cpu`` preset architecture with random weights (speed does not depend on the values), DNA: random ACGT
barcodes of 658 nt (133 tokens), text: "order family genus species" strings (32 tokens), images: random
128x128 tensors (decoding excluded); seed 0.

    python benchmarks/encoder_throughput.py --threads 1 --batch-sizes 64 256
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch

from _common import conditions, emit, flop_counter

TRANSFORMERS = ("dna", "text")


def matmul_flops_per_s(n: int, min_seconds: float = 0.3) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    reps, t0 = 0, time.perf_counter()
    while True:
        torch.mm(a, b)
        reps += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            return 2 * n**3 * reps / elapsed


def synthetic_inputs(model, modality: str, batch: int, rng: np.random.Generator):
    if modality == "dna":
        seqs = ["".join(rng.choice(list("ACGT"), 658)) for _ in range(batch)]
        t0 = time.perf_counter()
        inputs = model.preprocess.dna(seqs)
        return inputs, batch / (time.perf_counter() - t0)
    if modality == "text":
        ranks = [("Diptera", "Lepidoptera", "Hymenoptera"), ("Cecidomyiidae", "Noctuidae", "Braconidae"),
                 ("Asphondylia", "Agrotis", "Cotesia"), ("solidaginis", "ipsilon", "glomerata")]
        texts = [" ".join(rng.choice(r) for r in ranks) for _ in range(batch)]
        t0 = time.perf_counter()
        inputs = model.preprocess.text(texts)
        return inputs, batch / (time.perf_counter() - t0)
    return torch.rand(batch, 3, model.config.image_size, model.config.image_size), None


def forward_fn(encoder, inputs):
    """One forward pass; a frozen text encoder's per-string feature cache is emptied first, so that the
    transformer itself is measured (not cache look-ups of the same batch)."""
    cache = getattr(getattr(encoder, "_orig_mod", encoder), "_cache", None)

    def run():
        if cache is not None:
            cache.clear()
        return encoder(**inputs) if isinstance(inputs, dict) else encoder(inputs)

    return run


def measure(encoder, inputs, batch: int, args) -> dict:
    run = forward_fn(encoder, inputs)
    with torch.inference_mode():
        run()  # warm-up (and compilation for compiled encoders)
        with flop_counter() as counter:
            run()
        flops = counter.get_total_flops()
        fractions, rates = [], []
        for _ in range(args.repeats):
            before = matmul_flops_per_s(args.matmul_n)
            reps, t0 = 0, time.perf_counter()
            while True:
                run()
                reps += 1
                elapsed = time.perf_counter() - t0
                if elapsed >= args.min_seconds:
                    break
            after = matmul_flops_per_s(args.matmul_n)
            per_s = flops * reps / elapsed
            fractions.append(per_s / ((before + after) / 2))
            rates.append(batch * reps / elapsed)
    return {"records_per_s": round(statistics.median(rates), 1),
            "gflop_per_record": round(flops / batch / 1e9, 4),
            "achieved_gflop_per_s": round(statistics.median(rates) * flops / batch / 1e9, 2),
            "fraction_of_fp32_matmul": round(statistics.median(fractions), 3),
            "fraction_range": [round(min(fractions), 3), round(max(fractions), 3)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--modalities", default="dna,text,image")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=1.0, help="timing window per repeat")
    parser.add_argument("--matmul-n", type=int, default=1024)
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile'd encoders")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from clibd_toolkit.model import CLIBDModel
    from clibd_toolkit.presets import get_preset

    torch.manual_seed(args.seed)
    model = CLIBDModel(get_preset(args.preset, pretrained=False).with_modalities(args.modalities)).eval()
    rng = np.random.default_rng(args.seed)
    peak = statistics.median(matmul_flops_per_s(args.matmul_n) for _ in range(3))
    results = []
    for modality in model.modalities:
        encoder = model.encoders[modality]
        variants = {"eager": encoder}
        if hasattr(encoder, "chunk_ffn"):
            variants["unchunked-ffn"] = copy.deepcopy(encoder)
            variants["unchunked-ffn"].chunk_ffn = False
        if args.compile:
            variants["compiled"] = torch.compile(encoder, dynamic=False)
        for batch in args.batch_sizes:
            inputs, tokenise_rate = synthetic_inputs(model, modality, batch, rng)
            for name, enc in variants.items():
                row = {"modality": modality, "batch": batch, "variant": name, **measure(enc, inputs, batch, args)}
                if tokenise_rate is not None:
                    row["tokenise_records_per_s"] = round(tokenise_rate, 1)
                if modality in TRANSFORMERS:
                    row["meets_target_0.5"] = row["fraction_of_fp32_matmul"] >= 0.5
                results.append(row)
    emit({"benchmark": "encoder_throughput", "preset": args.preset, "weights": "random (architecture only)",
          "seed": args.seed, "batch_sizes": args.batch_sizes, "threads": torch.get_num_threads(),
          "inference": "eval + torch.inference_mode, fp32", "matmul_reference": f"fp32 torch.mm {args.matmul_n}^2",
          "matmul_gflop_per_s": round(peak / 1e9, 1), "repeats": args.repeats, "results": results,
          "conditions": conditions()})


if __name__ == "__main__":
    main()
