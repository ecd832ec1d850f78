"""The ``clibd`` command line: a thin shell over the library.

Every subcommand documents its options in ``--help``. Bad input ends with one line on stderr
(``clibd: error: ...``) and exit status 2; no traceback. Subcommands are registered in :data:`COMMANDS` as
``name -> (module, help)``; each module provides ``add_<name>_arguments(parser)`` and ``run_<name>(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

# subcommand -> (module defining add_<cmd>_arguments / run_<cmd>, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "presets": ("clibd_toolkit.cli", "list model presets and their encoders with parameter counts"),
    "models": ("clibd_toolkit.cli", "list the released CLIBD models (usable with --model, no training needed)"),
    "pretrain-dna": ("clibd_toolkit.pretrain", "pretrain a k-mer DNA encoder with masked k-mer modelling"),
    "train": ("clibd_toolkit.cli", "train a CLIBD model contrastively on records"),
    "embed": ("clibd_toolkit.embed", "embed records with a trained run into one embedding file (streamed, shardable)"),
    "simulate": ("clibd_toolkit.simulator", "write a simulated barcoding survey (the embedded default dataset)"),
    "inspect": ("clibd_toolkit.inspection", "counts, summaries and a record-by-record problem report of a data source"),
    "evaluate": ("clibd_toolkit.protocol", "the CLIBD evaluation protocol: micro/macro top-k per rank, seen/unseen"),
    "identify": ("clibd_toolkit.protocol", "name specimens (photos or barcodes) against a reference library"),
    "cluster": ("clibd_toolkit.cluster", "cluster unseen-species embeddings, scored against species and BINs"),
    "demo": ("clibd_toolkit.demo", "the main job: simulate a survey, train, evaluate and explore it with the notebooks; "
             "one report folder"),
    "report": ("clibd_toolkit.report", "run a notebook headless with parameters and export an offline HTML report"),
}


def _func_name(command: str) -> str:
    return command.replace("-", "_")


# --- shared options -------------------------------------------------------------------------------------------


def add_data_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """Add the options every data-reading command shares: ``--data``, ``--format``, ``--image-root``, ``--on-error``."""
    group = parser.add_argument_group("data")
    group.add_argument("--data", required=required, metavar="DATA",
                       help="records: BOLD TSV, CSV/TSV/Parquet, FASTA, CLIBD HDF5, BIOSCAN folder or simulator folder")
    group.add_argument("--format", default="auto", help="data format (default: detect from the path)")
    group.add_argument("--image-root", default=None, help="folder that relative image paths are resolved against")
    group.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                       help="bad records: stop with an error (default) or skip them, listing each in a rejects file")


def load_data(args: argparse.Namespace, rejects_path: Path | None = None):
    """Read ``--data`` with the shared options and write every bad record, with its reason, to a rejects CSV.

    The whole file is always read, so that every problem is found in one pass: under ``--on-error skip`` the bad
    records are left out (and counted); under ``--on-error raise`` (default) one DataError lists them all (the first
    ten in the message, every one in the rejects file) and nothing runs.
    """
    from .errors import DataError
    from .readers import detect_format, read_records, reader_options

    options = {}
    if getattr(args, "image_root", None):
        fmt = detect_format(Path(args.data)) if args.format == "auto" else args.format
        if "image_root" not in reader_options(fmt):
            raise DataError(f"--image-root does not apply to {fmt} data (its images are not files beside a table)")
        options["image_root"] = args.image_root
    result = read_records(args.data, format=args.format, on_error="skip", **options)
    if len(result.rejects):
        path = rejects_path or Path(str(args.data).rstrip("/") + ".rejects.csv")
        result.rejects.save(path)
        if args.on_error == "raise":
            rows = result.rejects.rows
            listed = "; ".join(f"{r['record_id'] or 'row ' + str(r['row'])}: {r['reason']}" for r in rows[:10])
            more = f" (and {len(rows) - 10} more)" if len(rows) > 10 else ""
            raise DataError(f"{len(rows)} of {result.n_read} records in {args.data} cannot be used: {listed}{more}. "
                            f"All are listed in {path}; fix them, or pass --on-error skip to leave them out",
                            record_id=rows[0]["record_id"])
        _info(f"{result.summary()}; rejects listed in {path}")
    return result.records


def _info(message: str) -> None:
    sys.stderr.write(message + "\n")


def add_model_arguments(parser: argparse.ArgumentParser, *, required: bool = True,
                        run_flags: Sequence[str] = ("--run",), run_help: str = "") -> None:
    """Add the model options of every command that embeds: ``--run RUN`` (a training run) or ``--model NAME|PATH``
    (a released CLIBD model, see ``clibd models``), and ``--checkpoint`` (with ``--run``)."""
    group = parser.add_argument_group("model (--run or --model)")
    choice = group.add_mutually_exclusive_group(required=required)
    choice.add_argument(*run_flags, dest="run", default=None, metavar="RUN",
                        help="training run folder (clibd train --out)" + (f"; {run_help}" if run_help else ""))
    choice.add_argument("--model", default=None, metavar="NAME|PATH",
                        help="a released CLIBD model instead of a run: a name from `clibd models` (downloaded once "
                             "from the Hugging Face hub, then cached), a released best.pth, or a folder holding one")
    group.add_argument("--checkpoint", default="best", help="with --run: best (default), last, or epoch-NNNN")


def load_model(args: argparse.Namespace, device: str = "cpu"):
    """The model that ``--run``/``--checkpoint`` or ``--model`` name (see :func:`add_model_arguments`)."""
    from .errors import ConfigError

    if getattr(args, "model", None):
        if getattr(args, "checkpoint", "best") != "best":
            raise ConfigError("--checkpoint selects a checkpoint of a --run; a released --model is one file")
        from .pretrained import load_pretrained

        return load_pretrained(args.model, device=device)
    if not getattr(args, "run", None):
        raise ConfigError("name the model: --run RUN (a training run) or --model NAME|PATH (a released CLIBD model; "
                          "`clibd models` lists them)")
    from .checkpoint import load_run

    return load_run(args.run, args.checkpoint, device=device)


def model_provenance(args: argparse.Namespace) -> dict:
    """What ``--run``/``--model`` named, for the config of every output (``pretrained``: the ``--model`` value)."""
    if getattr(args, "model", None):
        return {"pretrained": str(args.model)}
    return {"run": str(args.run), "checkpoint": args.checkpoint}


# --- presets --------------------------------------------------------------------------------------------------


def add_presets_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``clibd presets``."""
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run_presets(args: argparse.Namespace) -> int:
    """``clibd presets``: each preset's encoders with their parameter counts (a table, or JSON)."""
    from .encoders import list_architectures
    from .model import CLIBDModel
    from .presets import get_preset, list_presets

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


# --- models (released CLIBD checkpoints) ---------------------------------------------------------------------


def add_models_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``clibd models``."""
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--cache-dir", default=None, help="hub cache to look in (default: HF_HUB_CACHE)")


def run_models(args: argparse.Namespace) -> int:
    """``clibd models``: the released CLIBD models, what each holds, its size, where it comes from and whether it
    is cached here already."""
    from .pretrained import CITATION, HUB_REPO, LICENSE, cached_file, list_pretrained

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


# --- train ----------------------------------------------------------------------------------------------------


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``clibd train`` (defaults from :class:`~clibd_toolkit.config.TrainConfig`)."""
    from .config import TrainConfig

    defaults = TrainConfig()
    add_data_arguments(parser)
    parser.add_argument("--out", required=True, metavar="RUN", help="run folder to create (checkpoints, history)")
    model = parser.add_argument_group("model")
    model.add_argument("--preset", default="cpu", help="model preset: paper, cpu (default), tiny")
    model.add_argument("--modalities", default=None, help="comma-separated subset, e.g. dna,text (default: all)")
    model.add_argument("--no-pretrained", action="store_true", help="random initialisation instead of the preset's weights")
    model.add_argument("--finetune", choices=["lora", "full", "frozen"], default=None,
                       help="fine-tuning mode of every encoder (default: the preset's per-encoder modes)")
    model.add_argument("--lora-r", type=int, default=4, help="LoRA rank (with --finetune lora)")
    model.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default: = rank, CLIBD scaling)")
    model.add_argument("--lora-dropout", type=float, default=0.0, help="LoRA dropout")
    model.add_argument("--model-config", default=None, metavar="JSON", help="a ModelConfig JSON file (overrides --preset)")
    opt = parser.add_argument_group("training")
    opt.add_argument("--epochs", type=int, default=defaults.epochs)
    opt.add_argument("--batch-size", type=int, default=defaults.batch_size)
    opt.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate of the one-cycle schedule")
    opt.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    opt.add_argument("--grad-accum-steps", type=int, default=defaults.grad_accum_steps)
    opt.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=defaults.precision)
    opt.add_argument("--device", default=defaults.device, help="auto (default), cpu, cuda, cuda:N, mps")
    opt.add_argument("--seed", type=int, default=defaults.seed)
    opt.add_argument("--num-workers", type=int, default=defaults.num_workers,
                     help="processes building the training batches (image decoding, augmentation, tokenisation) "
                          "ahead of the step; 0 (default): in the training process. Results are the same either way")
    opt.add_argument("--no-augment", action="store_true", help="no image training augmentation")
    opt.add_argument("--max-steps", type=int, default=0, help="stop after this many optimiser steps (0: no limit)")
    opt.add_argument("--eval-every", type=int, default=defaults.eval_every, help="validate every N epochs")
    opt.add_argument("--split-seed", type=int, default=defaults.split_seed,
                     help="data without a split column: seed of the default CLIBD-style split that training holds "
                          "its queries and keys out of (the one `clibd evaluate` applies; default %(default)s)")
    opt.add_argument("--all-records", action="store_true",
                     help="data without a split column: train on every record instead (no validation; an "
                          "evaluation on the same data is then optimistic)")
    opt.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    opt.add_argument("--overwrite", action="store_true",
                     help="train into an existing non-empty --out folder that is not a run (files of the same names "
                          "are replaced); without it such a folder is refused")
    opt.add_argument("--no-progress", action="store_true", help="no progress bar")


def model_config_from_args(args: argparse.Namespace):
    """The ModelConfig that ``clibd train`` options describe: a saved config file or a preset, narrowed to
    ``--modalities`` and with the fine-tuning options applied."""
    from .config import AdapterConfig, ModelConfig
    from .presets import get_preset

    if args.model_config:
        cfg = ModelConfig.load(args.model_config)
    else:
        cfg = get_preset(args.preset, pretrained=False if args.no_pretrained else None)
    if args.modalities:
        cfg = cfg.with_modalities(args.modalities)
    if args.finetune:
        adapter = AdapterConfig(mode=args.finetune, r=args.lora_r,
                                alpha=args.lora_alpha if args.lora_alpha is not None else float(args.lora_r),
                                dropout=args.lora_dropout)
        cfg = cfg.with_adapter(adapter)
    return cfg


def run_train(args: argparse.Namespace) -> int:
    """``clibd train``: load the data, train, and print a one-line JSON summary of the run."""
    from .config import TrainConfig
    from .training import train

    train_cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                            grad_accum_steps=args.grad_accum_steps, precision=args.precision, device=args.device,
                            seed=args.seed, num_workers=args.num_workers, augment=not args.no_augment,
                            max_steps=args.max_steps, eval_every=args.eval_every, progress=not args.no_progress,
                            all_records=args.all_records, split_seed=args.split_seed)
    model_cfg = model_config_from_args(args)
    out = Path(args.out)
    from .io import refuse_foreign_folder, refuse_replacing_inputs

    refuse_replacing_inputs(out, {"--data": args.data})
    if not (out / "run.json").is_file():  # a run folder: --resume decides; anything else is the user's
        refuse_foreign_folder(out, overwrite=args.overwrite, what="training run (no run.json)")
    records = load_data(args, rejects_path=out / "data-rejects.csv")
    result = train(records, model_cfg, train_cfg, out, resume=args.resume, on_error=args.on_error,
                   data_info={"source": str(args.data)})
    last = result.history.iloc[-1] if len(result.history) else None
    first = result.history.iloc[0] if len(result.history) else None
    summary = {"run": str(out), "steps": result.steps, "best_epoch": result.best_epoch,
               "best_val_metric": result.best_metric,
               "loss_first": None if first is None else round(float(first["loss"]), 4),
               "loss_last": None if last is None else round(float(last["loss"]), 4), "rejected": result.rejected}
    from .distributed import is_main_process

    if is_main_process():
        sys.stdout.write(json.dumps(summary) + "\n")
    return 0


# --- entry point ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``clibd`` argument parser with every subcommand."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="clibd", description="CLIBD-style multimodal biodiversity models: images, DNA barcodes and taxonomy "
        "text in one latent space.", epilog="Run `clibd COMMAND --help` for the options of each command.")
    parser.add_argument("--version", action="version", version=f"clibd_toolkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log progress details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        module = importlib.import_module(module_name)
        getattr(module, f"add_{_func_name(name)}_arguments")(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``clibd`` command: returns the exit status (2 with a one-line message on bad input)."""
    from .errors import ClibdError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.command:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(getattr(module, f"run_{_func_name(args.command)}")(args) or 0)
    except ClibdError as exc:
        message = " ".join(str(exc).split())
        sys.stderr.write(f"clibd {args.command}: error: {message}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"clibd {args.command}: interrupted\n")
        return 130
    except OSError as exc:
        sys.stderr.write(f"clibd {args.command}: error: {exc}\n")
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
