"""Shared bits of the benchmark scripts: machine conditions, JSON output, a cached simulated survey and run folder.

Every benchmark prints ONE JSON object naming its inputs (sizes, seed, preset) and the conditions it ran under
(CPU count, load average, threads, versions): absolute times on a shared machine are noise, so each benchmark
measures what it compares side by side in the same process, and reports ratios.
"""
from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a fresh clone without `pip install -e .`
    sys.path.insert(0, str(REPO))


def conditions() -> dict[str, Any]:
    """What the numbers were measured on."""
    import numpy as np
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (None, None, None)
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "machine": platform.machine(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "loadavg_1m": None if load[0] is None else round(load[0], 2),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def emit(result: dict[str, Any]) -> None:
    """Print the one JSON object of a benchmark (and nothing else on stdout)."""
    sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    sys.stdout.flush()


def survey(workdir: Path, records: int, seed: int) -> Path:
    """A DNA-only simulated survey folder of ``records`` records, simulated once and reused (same seed = same data)."""
    from clibd_toolkit.simulator import SimulatorConfig, write_survey

    folder = workdir / f"survey-dna-{records}-seed{seed}"
    if (folder / "simulation.json").is_file():
        saved = json.loads((folder / "simulation.json").read_text())["config"]
        if saved.get("records") == records and saved.get("seed") == seed and not saved.get("images"):
            return folder
    write_survey(folder, SimulatorConfig(records=records, images=False, seed=seed), progress=False, overwrite=True)
    return folder


def random_run(workdir: Path, preset: str, modalities: str, seed: int) -> Path:
    """A run folder holding a model of ``preset`` with random weights (seeded), as `clibd train` writes one."""
    import torch

    from clibd_toolkit.checkpoint import save_checkpoint, write_run_info
    from clibd_toolkit.config import TrainConfig
    from clibd_toolkit.model import CLIBDModel
    from clibd_toolkit.presets import get_preset

    run = workdir / f"run-{preset}-{modalities.replace(',', '-')}-seed{seed}"
    if (run / "checkpoints" / "best" / "meta.json").is_file():
        return run
    cfg = get_preset(preset, pretrained=False).with_modalities(modalities)
    torch.manual_seed(seed)
    model = CLIBDModel(cfg)
    write_run_info(run, cfg, TrainConfig(), {"note": "random weights, for benchmarks"})
    save_checkpoint(run, "best", model, trainer_state=None, meta={"epoch": 0})
    return run


def flop_counter():
    """``FlopCounterMode`` with two of torch's gaps filled, so that FLOP/s fractions count the work really done.

    - CPU attention: torch registers FLOP formulas for the CUDA SDPA kernels only, so the CPU flash-attention
      kernel (``_scaled_dot_product_flash_attention_for_cpu`` and its backward), which ``scaled_dot_product_attention``
      runs on CPU, counts as zero FLOPs (about 15% of the ``cpu`` preset DNA encoder's work at 133 tokens). Here
      it is counted with torch's own SDPA formulas (``sdpa_flop_count`` / ``sdpa_backward_flop_count``).
    - Grouped (depthwise) convolutions: torch's formula for ``convolution_backward`` ignores ``groups`` and counts
      a depthwise convolution's gradients as if the convolution were dense (40x too many FLOPs for
      EfficientNet-Lite0's backward pass); here each requested gradient costs what the forward convolution costs,
      as for dense convolutions.
    """
    import torch
    from torch.utils.flop_counter import (FlopCounterMode, conv_flop_count, sdpa_backward_flop_count,
                                          sdpa_flop_count)

    aten = torch.ops.aten

    def conv_backward(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                      _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
        forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
        return int(forward * (int(bool(output_mask[0])) + int(bool(output_mask[1]))))

    def cpu_attention(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    def cpu_attention_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                               **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

    return FlopCounterMode(display=False, custom_mapping={
        aten.convolution_backward: conv_backward,
        aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: cpu_attention_backward,
    })
