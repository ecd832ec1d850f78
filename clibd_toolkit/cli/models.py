"""``clibd models``: the released CLIBD models."""
from __future__ import annotations

import argparse
import json
import sys


def add_models_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``clibd models``."""
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--cache-dir", default=None, help="hub cache to look in (default: HF_HUB_CACHE)")


def run_models(args: argparse.Namespace) -> int:
    """``clibd models``: the released CLIBD models, what each holds, its size, where it comes from and whether it
    is cached here already."""
    from ..pretrained import CITATION, HUB_REPO, LICENSE, cached_file, list_pretrained

    rows = []
    for entry in list_pretrained():
        cached = cached_file(entry, cache_dir=args.cache_dir)
        rows.append({**entry.to_json_dict(), "cached": None if cached is None else str(cached)})
    if args.json:
        sys.stdout.write(json.dumps({"repository": HUB_REPO, "license": LICENSE, "models": rows}, indent=2) + "\n")
        return 0
    short = {"image": "I", "dna": "D", "text": "T"}
    header = f"{'name':<32} {'aligns':<7} {'trained on':<22} {'size':>8}  {'cached':<6}  source"
    lines = [header, "-" * len(header)]
    for r in rows:
        mods = "+".join(short[m] for m in r["modalities"])
        lines.append(f"{r['name']:<32} {mods:<7} {r['data']:<22} {r['size_bytes'] / 1e9:>6.2f}GB  "
                     f"{'yes' if r['cached'] else 'no':<6}  {r['source']}" + (f"  ({r['note']})" if r["note"] else ""))
    lines += ["", f"Use one with --model NAME (downloaded once from https://huggingface.co/{HUB_REPO}, then cached; "
              "a local best.pth works too). Licence: " + LICENSE + ". Cite:", CITATION]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
