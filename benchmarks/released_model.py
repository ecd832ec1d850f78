"""Load time and embedding throughput of a released CLIBD model (the real-size ``paper`` architecture).

A file in the exact released layout (``official-checkpoints.md`` section 2: the flat ``SimpleCLIP`` state dict,
pre-2025 key names, LoRA tensors in every ViT block, ``position_ids`` buffers) is written with random weights of the
real shapes (ViT-B/16 + BarcodeBERT-base + bert-small, 480 keys, ~0.81 GB) by the official module tree re-typed in
``tests/official_reference.py``; speed does not depend on the values. Then, in one process:

- load: ``read`` (weights-only ``torch.load``, memory-mapped), ``convert`` (key mapping, LoRA merge), ``build``
  (the toolkit model) and ``load`` (strict ``load_state_dict``), as :func:`clibd_toolkit.load_official_checkpoint`;
- throughput in eval mode: images (decoded 224x224 tensors; decoding excluded), barcodes (658-nt strings,
  tokenisation included), taxonomy strings (tokenisation included), records/s, median of ``--repeats``;
- on ``--device cuda`` (or ``auto`` with a GPU) the same on the GPU (fp32, as the released models).

    python benchmarks/released_model.py                       # real size, CPU
    python benchmarks/released_model.py --size small --repeats 1   # seconds (the test suite's smoke run)
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import REPO, conditions, emit

sys.path.insert(0, str(REPO / "tests"))
import official_reference as ref  # noqa: E402  (the official module tree, stack-free)


def throughput(model, modality: str, batch: int, repeats: int, device: str, rng: np.random.Generator) -> float:
    if modality == "image":
        pixels = torch.rand(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        work = lambda: model.encode_inputs("image", pixels)  # noqa: E731
    elif modality == "dna":
        seqs = ["".join(rng.choice(list("ACGT"), 658)) for _ in range(batch)]
        work = lambda: model.encode_dna(seqs, batch_size=batch)  # noqa: E731
    else:
        ranks = [("Diptera", "Lepidoptera"), ("Cecidomyiidae", "Noctuidae"), ("Asphondylia", "Agrotis"),
                 ("Asphondylia solidaginis", "Agrotis ipsilon")]
        texts = [" ".join(r[rng.integers(2)] for r in ranks) for _ in range(batch)]
        work = lambda: model.encode_text(texts, batch_size=batch)  # noqa: E731
    with torch.inference_mode():
        work()  # warm-up
        times = []
        for _ in range(repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            work()
            seconds = time.perf_counter() - t0
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(seconds)
    return batch / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["paper", "small"], default="paper")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or auto (cuda when available)")
    parser.add_argument("--image-batch", type=int, default=16)
    parser.add_argument("--dna-batch", type=int, default=64)
    parser.add_argument("--text-batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="where the released-layout file is written (default: temp)")
    args = parser.parse_args()
    from clibd_toolkit.model import CLIBDModel
    from clibd_toolkit.official import convert_official_state_dict, load_converted, read_official_state

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    sizes = ref.PAPER_SIZES if args.size == "paper" else ref.SMALL_SIZES
    heads = None if args.size == "paper" else {"image": 2, "dna": 2, "text": 2}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        path = Path(tmp) / "best.pth"
        official = ref.fill_random(ref.build_official(sizes), seed=0, std=0.02)
        t0 = time.perf_counter()
        ref.save_released(official, path)
        write_s = time.perf_counter() - t0
        n_keys = len(official.state_dict()) + 2  # + the two position_ids buffers
        del official
        stamps = [time.perf_counter()]
        state = read_official_state(path)
        stamps.append(time.perf_counter())
        converted = convert_official_state_dict(state, source=str(path), num_heads=heads)
        stamps.append(time.perf_counter())
        model = CLIBDModel(converted.config)
        stamps.append(time.perf_counter())
        load_converted(model, converted, str(path))
        stamps.append(time.perf_counter())
        read_s, convert_s, build_s, load_s = np.diff(stamps).tolist()
        model.eval()
        file_bytes = path.stat().st_size
        del state, converted
        results = {"load": {"read_s": read_s, "convert_s": convert_s, "build_s": build_s, "load_s": load_s,
                            "total_s": read_s + convert_s + build_s + load_s}}
        t0 = time.perf_counter()
        model.to(device)
        results["load"]["to_device_s"] = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        batches = {"image": args.image_batch, "dna": args.dna_batch, "text": args.text_batch}
        results["records_per_s"] = {m: throughput(model, m, b, args.repeats, device, rng) for m, b in batches.items()}
    emit({"benchmark": "released_model", "size": args.size, "device": device, "file_bytes": file_bytes,
          "keys": n_keys, "parameters": sum(p.numel() for p in model.parameters()), "write_s": write_s,
          "batches": batches, "repeats": args.repeats, **results,
          "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "conditions": conditions()})


if __name__ == "__main__":
    main()
