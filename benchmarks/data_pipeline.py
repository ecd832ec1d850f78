"""Training data pipeline throughput: samples/s of building training batches from real BIOSCAN JPEGs.

One sample = what training does per image record (:mod:`clibd_toolkit.train_data`, the code ``clibd train`` runs):
read the JPEG bytes, decode them to RGB (PIL), CLIBD's training augmentation (random resized crop to the preset's
input size, flips, rotation up to 45 degrees) with the record's seeded generator, to a float tensor, batched;
measured for each preset's input size (``cpu``: 128 px, ``paper``: 224 px), in the training process
(``workers 0``) and in 1..N DataLoader worker processes, from each source:

- ``folder_original``: the photos as they are (by default the real BIOSCAN-1M well photos, 1024x768 JPEG files,
  ``../shared/data/bioscan1m-raw-wells``);
- ``folder_256``: the same photos resized to a short side of 256 px and saved as JPEG files (quality 95) in a
  temporary folder: the size of BIOSCAN-5M's ``cropped_256`` images and of the images in CLIBD's HDF5 files;
- ``hdf5_256``: those same JPEG bytes packed into the CLIBD HDF5 layout by the toolkit's writer in the temporary
  folder and read lazily through its reader (``hdf5://`` references), as ``clibd train --data file.h5`` reads them.

Records cycle over the photos (``--records`` of them, each its own record id, so each gets its own augmentation).
DNA and text tokenisation are not included (these photos have no barcodes or labels; both cost far less than an
image). ``per_worker_samples_per_s`` = samples/s / workers. Timing starts after the first batch arrives (worker
start-up is reported separately), so the figures are the steady pace.

GPU JPEG decoding (``torchvision.io.decode_jpeg(..., device="cuda")``, nvJPEG) is timed too when torchvision and a
GPU are present (decode only, a batch of the ``folder_256`` JPEG bytes); otherwise it is reported unavailable with
the reason (no torchvision wheel matches the CPU torch build of the toolkit's CPU environment).

    python benchmarks/data_pipeline.py                                # cpu + paper sizes, workers 0 1 2
    python benchmarks/data_pipeline.py --workers 0 1 2 4 8 16 --records 4096   # a 16-core GPU machine
    python benchmarks/data_pipeline.py --smoke                        # CI smoke test: a few records
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from _common import REPO, conditions, emit

RAW_WELLS = REPO.parent / "shared" / "data" / "bioscan1m-raw-wells" / "images"


def photos(folder: Path, limit: int | None) -> list[Path]:
    from clibd_toolkit.errors import DataFileError

    found = sorted(folder.rglob("*.jpg"))
    if not found:
        raise DataFileError(f"no JPEG photos in {folder}; give a folder of BIOSCAN JPEGs with --images "
                            "(../shared/data/bioscan1m-raw-wells/images in the project's data)")
    return found[:limit] if limit else found


def pixels(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as im:
        return f"{im.size[0]}x{im.size[1]}"


def resized_copies(sources: list[Path], out: Path, short: int = 256) -> list[Path]:
    """JPEG copies resized to a short side of ``short`` px (BIOSCAN-5M cropped_256 / CLIBD HDF5 size)."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for src in sources:
        with Image.open(src) as im:
            w, h = im.size
            scale = short / min(w, h)
            small = im.convert("RGB").resize((round(w * scale), round(h * scale)), Image.Resampling.BILINEAR)
        dst = out / src.name
        small.save(dst, format="JPEG", quality=95)
        paths.append(dst)
    return paths


def records_for(images: list[str], n: int):
    import pandas as pd

    from clibd_toolkit.records import normalise_records

    return normalise_records(pd.DataFrame({"record_id": [f"R{i:06d}" for i in range(n)],
                                           "image": [images[i % len(images)] for i in range(n)],
                                           "split": ["train"] * n}))


def hdf5_records(jpegs: list[Path], n: int, folder: Path):
    """``n`` records whose images are the ``jpegs`` packed into a CLIBD HDF5 file (one row each), read back."""
    from clibd_toolkit.hdf5_writer import write_clibd_hdf5
    from clibd_toolkit.readers import load_records

    path = write_clibd_hdf5(folder / "bioscan-256.h5", records_for([str(p) for p in jpegs], len(jpegs)),
                            metasplits=False, progress=False)
    refs = load_records(path)["image"].tolist()
    return records_for(refs, n), path


def measure(preprocess, records, batch_size: int, workers: int, seed: int) -> dict:
    import numpy as np

    from clibd_toolkit.train_data import TrainBatches, iter_batches

    plan = [np.arange(b, min(b + batch_size, len(records))) for b in range(0, len(records), batch_size)]
    dataset = TrainBatches(preprocess, records, ("image",), plan, seed=seed, epoch=0, augment=True)
    t0 = time.perf_counter()
    batches = iter_batches(dataset, num_workers=workers, seed=seed)
    first = next(batches)
    first.raise_error()
    t_first = time.perf_counter()
    samples = 0
    try:
        for built in batches:
            built.raise_error()
            samples += len(built.batch)
    finally:
        batches.close()
    seconds = time.perf_counter() - t_first
    rate = samples / seconds if seconds > 0 else None
    return {"workers": workers, "samples": samples, "seconds": round(seconds, 2),
            "first_batch_seconds": round(t_first - t0, 2),
            "samples_per_s": None if rate is None else round(rate, 1),
            "per_worker_samples_per_s": None if rate is None else round(rate / max(workers, 1), 1)}


def gpu_decode(jpegs: list[Path], batch_size: int, seconds: float = 2.0) -> dict:
    """nvJPEG decode through torchvision on the GPU, when both are there."""
    import torch

    try:
        import torchvision
        from torchvision.io import decode_jpeg
    except ImportError as exc:
        return {"available": False, "reason": f"torchvision is not installed ({exc}); install the torchvision "
                "build matching torch on the GPU machine for nvJPEG decoding"}
    if not torch.cuda.is_available():
        return {"available": False, "reason": "no CUDA device", "torchvision": torchvision.__version__}
    data = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in jpegs]
    batch = [data[i % len(data)] for i in range(batch_size)]
    decode_jpeg(batch, device="cuda")
    torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        decode_jpeg(batch, device="cuda")
        n += batch_size
    torch.cuda.synchronize()
    return {"available": True, "torchvision": torchvision.__version__, "what": "decode only, folder_256 JPEGs",
            "batch_size": batch_size, "samples_per_s": round(n / (time.perf_counter() - t0), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=RAW_WELLS, help="folder of real BIOSCAN JPEGs")
    parser.add_argument("--presets", nargs="+", default=["cpu", "paper"])
    parser.add_argument("--sources", nargs="+", default=["folder_original", "folder_256", "hdf5_256"],
                        choices=["folder_original", "folder_256", "hdf5_256"])
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2],
                        help="DataLoader worker counts (0 = in the training process)")
    parser.add_argument("--records", type=int, default=384, help="samples per measurement (plus one batch)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--photos", type=int, default=None, help="use only the first N photos of --images")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the training process (DataLoader workers always run one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="4 photos, 2 batches of 4, workers 0 and 1")
    args = parser.parse_args()
    if args.smoke:
        args.photos, args.records, args.batch_size, args.workers, args.presets = 4, 8, 4, [0, 1], ["cpu"]

    import torch

    from clibd_toolkit.model import Preprocess
    from clibd_toolkit.presets import get_preset

    torch.set_num_threads(args.threads)  # so that "workers 0" is one core too, as each worker is

    originals = photos(args.images, args.photos)
    results = []
    with tempfile.TemporaryDirectory(prefix="clibd-data-pipeline-") as tmp:
        small = resized_copies(originals, Path(tmp) / "folder_256")
        sizes = {"folder_original": pixels(originals[0]), "folder_256": pixels(small[0])}  # of the first photo
        n = args.records + args.batch_size  # the first batch is not timed
        sources = {}
        if "folder_original" in args.sources:
            sources["folder_original"] = records_for([str(p) for p in originals], n)
        if "folder_256" in args.sources:
            sources["folder_256"] = records_for([str(p) for p in small], n)
        if "hdf5_256" in args.sources:
            sources["hdf5_256"], _ = hdf5_records(small, n, Path(tmp))
        for preset in args.presets:
            cfg = get_preset(preset, pretrained=False)
            preprocess = Preprocess(cfg)  # images only: no model, no tokenizer needed
            for name, records in sources.items():
                for workers in args.workers:
                    load_before = os.getloadavg()[0]
                    row = measure(preprocess, records, args.batch_size, workers, args.seed)
                    results.append({"preset": preset, "image_size": cfg.image_size, "source": name, **row,
                                    "loadavg_1m_before": round(load_before, 2)})
        gpu = gpu_decode(small, args.batch_size * 8)

    def one(preset, source, workers):
        return next((r["samples_per_s"] for r in results if (r["preset"], r["source"], r["workers"])
                     == (preset, source, workers)), None)

    emit({
        "benchmark": "data_pipeline", "images": str(args.images), "photos": len(originals),
        "photo_pixels": sizes,
        "records_timed": args.records, "batch_size": args.batch_size, "seed": args.seed,
        "what": "JPEG read + PIL decode + CLIBD training augmentation + tensor batch, as clibd train builds them",
        "results": results,
        "in_process_samples_per_s": {f"{p}/{s}": one(p, s, 0) for p in args.presets for s in sources},
        "gpu_jpeg_decode": gpu,
        "cpu_count_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "conditions": conditions(),
    })


if __name__ == "__main__":
    main()
