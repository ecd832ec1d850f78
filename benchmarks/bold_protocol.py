"""Baselines side by side on real barcodes: the CLIBD protocol on the BOLD insect COI set (issue 4).

Data: ``../shared/data/bold-insect-coi/bold_insect_coi5p.tsv.gz`` (75,750 real BOLD records) with the toolkit's
default CLIBD-style split (seed 42: 20 % of common species unseen, rare species unseen, queries vs pooled keys).

Methods (rows of the table):

- (a) ``kmer_knn``: classical 5-mer frequency vectors (overlapping 5-mers, counts, L2-normalised;
  :func:`clibd_toolkit.kmers.kmer_profiles`), cosine kNN;
- (b) ``no_alignment``: the ``cpu`` preset's encoders (pretrained DNA + text backbones) with their new, randomly
  initialised projection heads (CLIBD's "no alignment" baseline, reference 1.6);
- (c) ``dna_pretrained``: the DNA encoder after masked k-mer pretraining only (mean-pooled last hidden states);
- (d) ``clibd``: CLIBD aligned on DNA + taxonomy text with the ``cpu`` preset, trained on the training split within
  the time budget (default 30 minutes on this machine).

The bundled DNA weights were pretrained on the training split of the same seeded split (``clibd pretrain-dna
--splits pretrain,train``), so no query or key barcode was seen in pretraining.

Prints one JSON object (and writes it plus a Markdown table with ``--out``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "bold-insect-coi" / "bold_insect_coi5p.tsv.gz"


def evaluate(emb, pairs):
    from clibd_toolkit.evaluate import EvalConfig, evaluate_embeddings

    return evaluate_embeddings(emb, EvalConfig(stage="test", ks=(1,), pairs=tuple(pairs), per_taxon=False)).rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--seed", type=int, default=42, help="split seed (the bundled DNA weights used 42)")
    parser.add_argument("--train-minutes", type=float, default=30.0, help="time budget of method (d)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of (d), cut short by --train-minutes")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--limit", type=int, default=0, help="use only this many records (smoke runs)")
    parser.add_argument("--out", default=None, help="folder for bold_protocol.json and bold_protocol.md")
    parser.add_argument("--run-dir", default=None, help="where (d) trains (default: a temporary folder)")
    args = parser.parse_args(argv)

    import tempfile

    import pandas as pd

    import clibd_toolkit as ctk
    from clibd_toolkit.embed import extract_embeddings
    from clibd_toolkit.splits import SplitConfig, ensure_splits, key_mask, query_mask
    from clibd_toolkit.store import META_COLUMNS, EmbeddingSet
    from clibd_toolkit.kmers import kmer_profiles

    torch.manual_seed(0)
    t0 = time.time()
    records = ctk.load_records(args.data)
    if args.limit:
        records = records.sample(n=min(args.limit, len(records)), random_state=0).reset_index(drop=True)
    records, _ = ensure_splits(records, SplitConfig(seed=args.seed))
    evaluated = key_mask(records) | query_mask(records, "test", "seen") | query_mask(records, "test", "unseen")
    subset = records.loc[evaluated].reset_index(drop=True)
    meta = subset[list(META_COLUMNS)]
    timings: dict[str, float] = {}
    tables: dict[str, pd.DataFrame] = {}

    # (a) 5-mer frequency kNN
    t = time.time()
    tables["kmer_knn"] = evaluate(EmbeddingSet(meta, {"dna": kmer_profiles(subset.dna_barcode.tolist())}), ["dna->dna"])
    timings["kmer_knn"] = time.time() - t

    # (b) no alignment: pretrained backbones + random heads (seeded)
    t = time.time()
    cfg = ctk.get_preset("cpu").with_modalities("dna,text")
    torch.manual_seed(args.seed)
    model = ctk.create_model(cfg).eval()
    emb_b = extract_embeddings(model, subset, batch_size=256, progress=False)
    tables["no_alignment"] = evaluate(emb_b, ["dna->dna", "dna->text"])
    timings["no_alignment"] = time.time() - t

    # (c) DNA encoder after masked k-mer pretraining only: mean-pooled last hidden states, no head
    t = time.time()
    enc = model.encoders["dna"]
    vectors = []
    with torch.no_grad():
        for start in range(0, len(subset), 256):
            part = subset.iloc[start:start + 256]
            inputs = model.preprocess.dna(part.dna_barcode.tolist(), part.record_id.tolist())
            hidden = enc.backbone(**inputs).last_hidden_state
            w = inputs["attention_mask"].unsqueeze(-1).float()
            vectors.append(torch.nn.functional.normalize((hidden * w).sum(1) / w.sum(1), dim=-1).numpy())
    tables["dna_pretrained"] = evaluate(EmbeddingSet(meta, {"dna": np.concatenate(vectors)}), ["dna->dna"])
    timings["dna_pretrained"] = time.time() - t

    # (d) CLIBD aligned on DNA + text, training split only, within the time budget
    t = time.time()
    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="bold_protocol_"))
    n_train = int(records.split.isin(["train", "pretrain"]).sum())
    steps_per_epoch = max(1, n_train // args.batch_size)
    train_cfg = ctk.TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, progress=False,
                                eval_every=args.epochs, seed=args.seed)
    # time a few steps on the training records alone (no validation), including model build and checkpointing,
    # so the estimate errs on the slow side; then size max_steps so training plus validation fit the budget
    probe_steps = 10
    train_only = records.loc[records.split.isin(["train", "pretrain"])].reset_index(drop=True)
    t_probe = time.time()
    ctk.train(train_only, cfg, train_cfg.replace(epochs=1, max_steps=probe_steps), run_dir / "probe")
    step_time = (time.time() - t_probe) / probe_steps
    budget_steps = int(args.train_minutes * 60 * 0.9 / step_time)
    max_steps = min(budget_steps, steps_per_epoch * args.epochs)
    t_train = time.time()
    result = ctk.train(records, cfg, train_cfg.replace(max_steps=max_steps), run_dir / "run")
    train_seconds = time.time() - t_train
    emb_d = extract_embeddings(result.model, subset, batch_size=256, progress=False)
    tables["clibd"] = evaluate(emb_d, ["dna->dna", "dna->text"])
    timings["clibd"] = time.time() - t

    rows = []
    for method, table in tables.items():
        for r in table.itertuples(index=False):
            rows.append({"method": method, "query": r.query, "key": r.key, "split": r.split, "rank": r.rank,
                         "micro": None if pd.isna(r.micro) else round(float(r.micro), 4),
                         "macro": None if pd.isna(r.macro) else round(float(r.macro), 4), "n": int(r.n)})
    out = {
        "benchmark": "bold_protocol", "data": str(args.data), "n_records": int(len(records)),
        "n_evaluated": int(len(subset)), "n_train": n_train, "split_seed": args.seed,
        "training": {"preset": "cpu", "modalities": ["dna", "text"], "steps": int(result.steps),
                     "probe_seconds_per_step": round(step_time, 2),
                     "max_steps": int(max_steps), "epochs_equivalent": round(result.steps / steps_per_epoch, 2),
                     "seconds": round(train_seconds, 1), "budget_minutes": args.train_minutes,
                     "batch_size": args.batch_size, "lr": args.lr, "torch_threads": torch.get_num_threads()},
        "seconds": {k: round(v, 1) for k, v in timings.items()}, "total_seconds": round(time.time() - t0, 1),
        "rows": rows,
    }
    if args.out:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "bold_protocol.json").write_text(json.dumps(out, indent=1) + "\n")
        (folder / "bold_protocol.md").write_text(markdown(rows) + "\n")
    sys.stdout.write(json.dumps(out) + "\n")
    return out


def markdown(rows: list[dict]) -> str:
    """Top-1 accuracy (%) per method, pair and rank: micro and macro, seen / unseen / H.M."""
    import pandas as pd

    df = pd.DataFrame(rows)
    lines = ["| method | pair | rank | micro seen | micro unseen | micro H.M. | macro seen | macro unseen | macro H.M. |",
             "|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "-" if v is None or pd.isna(v) else f"{100 * v:.1f}"  # noqa: E731
    for (method, q, k, rank), g in df.groupby(["method", "query", "key", "rank"], sort=False):
        cell = {(r.split, m): getattr(r, m) for r in g.itertuples() for m in ("micro", "macro")}
        lines.append(f"| {method} | {q}->{k} | {rank} | " + " | ".join(
            fmt(cell.get((s, m))) for m in ("micro", "macro") for s in ("seen", "unseen", "harmonic_mean")) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
