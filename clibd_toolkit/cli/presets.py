"""``clibd presets``: model presets, encoders and parameter counts."""
from __future__ import annotations

import argparse
import json
import sys


def add_presets_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``clibd presets``."""
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run_presets(args: argparse.Namespace) -> int:
    """``clibd presets``: each preset's encoders with their parameter counts (a table, or JSON)."""
    from ..encoders import list_architectures
    from ..model import CLIBDModel
    from ..presets import get_preset, list_presets

    rows = []
    for name in list_presets():
        cfg = get_preset(name, pretrained=False)
        model = CLIBDModel(cfg)
        for modality in cfg.modalities:
            enc_cfg = cfg.encoder(modality)
            enc = model.encoders[modality]
            rows.append({"preset": name, "modality": modality, "arch": enc_cfg.arch,
                         "weights": get_preset(name).encoder(modality).pretrained or "random",
                         "finetune": enc_cfg.adapter.mode, "parameters": sum(p.numel() for p in enc.parameters()),
                         "embed_dim": cfg.embed_dim})
    if args.json:
        sys.stdout.write(json.dumps({"presets": rows, "architectures": [
            {"modality": s.modality, "arch": s.name, "description": s.description} for s in list_architectures()]},
            indent=2) + "\n")
        return 0
    header = f"{'preset':<7} {'modality':<8} {'arch':<19} {'weights':<28} {'finetune':<8} {'parameters':>12}  dim"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['preset']:<7} {r['modality']:<8} {r['arch']:<19} {str(r['weights']):<28} {r['finetune']:<8} "
                     f"{r['parameters']:>12,}  {r['embed_dim']}")
    lines.append("(default preset: cpu; `weights` is what pretrained=True loads: 'bundled' ships offline)")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
