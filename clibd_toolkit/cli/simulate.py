"""``clibd simulate``: write a simulated barcoding survey (the toolkit's embedded default dataset)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..simulator.config import SimulatorConfig

# CLI flag -> SimulatorConfig field, for the options that map one to one
_FLAGS = {
    "records": "records", "seed": "seed", "orders": "orders", "families": "families", "genera": "genera",
    "species": "species", "image_size": "image_size", "image_format": "image_format",
    "unlabelled_fraction": "unlabelled_fraction", "cryptic_fraction": "cryptic_fraction",
    "abundance_sigma": "abundance_sigma",
}


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``clibd simulate``; every one defaults to :class:`SimulatorConfig`'s value."""
    d = SimulatorConfig()
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write (records.csv + images/ + "
                        "simulation.json; or survey.h5 with --format hdf5)")
    parser.add_argument("--records", type=int, default=None, metavar="N",
                        help=f"records in the survey (default {d.records})")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"random seed; same seed, same survey (default {d.seed})")
    tree = parser.add_argument_group("taxonomy tree")
    tree.add_argument("--orders", type=int, default=None, help=f"insect orders, 1-9 (default {d.orders})")
    tree.add_argument("--families", type=int, default=None, help=f"families in the tree (default {d.families})")
    tree.add_argument("--genera", type=int, default=None, help=f"genera in the tree (default {d.genera})")
    tree.add_argument("--species", type=int, default=None, help=f"species in the tree (default {d.species})")
    tree.add_argument("--abundance-sigma", type=float, default=None,
                      help="log-normal spread of species abundances; larger = more rare species "
                      f"(default {d.abundance_sigma})")
    tree.add_argument("--unlabelled-fraction", type=float, default=None,
                      help=f"fraction of records without a species label (default {d.unlabelled_fraction})")
    tree.add_argument("--cryptic-fraction", type=float, default=None,
                      help=f"fraction of species that look exactly like a congener (default {d.cryptic_fraction})")
    img = parser.add_argument_group("images")
    img.add_argument("--no-images", action="store_true", help="DNA-only survey (fast; for million-record tests)")
    img.add_argument("--image-size", type=int, default=None,
                     help=f"image side in pixels, 32-256 (default {d.image_size})")
    img.add_argument("--image-format", choices=["jpeg", "png"], default=None, help="image file format (default jpeg)")
    out = parser.add_argument_group("output")
    out.add_argument("--format", choices=["folder", "hdf5"], default="folder",
                     help="folder: records.csv + image files (default); hdf5: the CLIBD HDF5 layout, with CLIBD splits")
    out.add_argument("--splits", action="store_true",
                     help="fill the split column with CLIBD splits (default: leave it to the training run's splitter)")
    out.add_argument("--config", default=None, metavar="JSON",
                     help="a SimulatorConfig JSON file (e.g. a survey's simulation.json); other options override it")
    out.add_argument("--overwrite", action="store_true", help="replace a survey already in --out")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """The :class:`SimulatorConfig` given by ``--config`` (if any) and the explicit options."""
    base: dict[str, Any] = {}
    if args.config:
        base = _load_config_dict(args.config)
    for flag, name in _FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            base[name] = value
    if args.no_images:
        base["images"] = False
    return SimulatorConfig.from_dict(base)


def _load_config_dict(path: str) -> dict[str, Any]:
    from ..errors import ConfigError

    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict):  # a survey's simulation.json
        data = data["config"]
    kind = data.get("config_kind", SimulatorConfig.kind) if isinstance(data, dict) else None
    if kind != SimulatorConfig.kind:
        raise ConfigError(f"{path} holds a {kind!r} config, not a simulator config")
    return SimulatorConfig.from_dict(data).to_dict()


def run_simulate(args: argparse.Namespace) -> int:
    """Write the survey and print one JSON line: where it is and its main counts."""
    from ..simulator.survey import write_survey

    config = config_from_args(args)
    target = write_survey(args.out, config, format=args.format, progress=not args.no_progress,
                          overwrite=args.overwrite, splits=args.splits)
    with open(f"{args.out}/simulation.json", encoding="utf-8") as fh:
        summary = json.load(fh)["summary"]
    line = {"out": str(target), "records": summary["records"], "images": summary["records_with_image"],
            "species_observed": summary["observed"]["species"],
            "species_labelled_records": summary["labelled_records"].get("species", 0),
            "load_with": f"clibd_toolkit.load_records({str(target)!r})"}
    sys.stdout.write(json.dumps(line) + "\n")
    return 0
