"""``clibd train``: contrastive training of a CLIBD model (:func:`clibd_toolkit.training.train`)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._common import add_data_arguments, load_data


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``clibd train`` (defaults from :class:`~clibd_toolkit.config.TrainConfig`)."""
    from ..config import TrainConfig

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
    from ..config import AdapterConfig, ModelConfig
    from ..presets import get_preset

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
    from ..config import TrainConfig
    from ..training import train

    train_cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                            grad_accum_steps=args.grad_accum_steps, precision=args.precision, device=args.device,
                            seed=args.seed, num_workers=args.num_workers, augment=not args.no_augment,
                            max_steps=args.max_steps, eval_every=args.eval_every, progress=not args.no_progress,
                            all_records=args.all_records, split_seed=args.split_seed)
    model_cfg = model_config_from_args(args)
    out = Path(args.out)
    from ..io import refuse_foreign_folder, refuse_replacing_inputs

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
    from ..distributed import is_main_process

    if is_main_process():
        sys.stdout.write(json.dumps(summary) + "\n")
    return 0
