"""The CLIBD-style splitter (reference 4.1) against a hand-computed example and independent invariant checks."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from clibd_toolkit.errors import ConfigError, DataError
from clibd_toolkit.schema import SPLITS
from clibd_toolkit.splits import SplitConfig, assign_splits, ensure_splits, split_summary

SEEN = ("train", "val_seen", "test_seen", "seen_keys")
UNSEEN_VAL = ("val_unseen", "val_unseen_keys")
UNSEEN_TEST = ("test_unseen", "test_unseen_keys")


def _records(species_counts: dict[str | None, int]) -> pd.DataFrame:
    rows = []
    for sp, n in species_counts.items():
        for i in range(n):
            rows.append({"record_id": f"{sp or 'none'}-{i:03d}", "species": sp})
    return pd.DataFrame(rows)


def test_hand_computed_example():
    recs = _records({"A": 10, "B": 20, "C": 3, "D": 1, "E": 2, None: 4})
    out = assign_splits(recs, SplitConfig(seed=3))
    table = out.groupby(["species", "split"], dropna=False).size().unstack(fill_value=0)
    assert out.loc[out["species"].isna(), "split"].eq("pretrain").all()
    assert table.loc["D"].to_dict().get("single_species") == 1
    # two common species: floor(0.8 * 2) = 1 seen, 1 unseen; floor(0.5 * 1) = 0 unseen common species for val
    seen = "A" if table.loc["A", "train"] > 0 else "B"
    unseen = "B" if seen == "A" else "A"
    n_seen = {"A": 10, "B": 20}[seen]
    assert [table.loc[seen, s] for s in SEEN] == ({10: [7, 1, 1, 1], 20: [14, 2, 2, 2]}[n_seen])
    half = {"A": 5, "B": 10}[unseen]
    assert (table.loc[unseen, "test_unseen"], table.loc[unseen, "test_unseen_keys"]) == (half, half)
    # tail species C (3) and E (2): floor(0.5 * 2) = 1 to val, 1 to test; queries floor(n/2), keys the rest
    for sp, n in (("C", 3), ("E", 2)):
        row = table.loc[sp]
        q = row.get("val_unseen", 0) + row.get("test_unseen", 0)
        k = row.get("val_unseen_keys", 0) + row.get("test_unseen_keys", 0)
        assert (q, k) == (n // 2, n - n // 2)
    assert (table.loc["C", "val_unseen"] > 0) != (table.loc["E", "val_unseen"] > 0)


def _check_invariants(recs: pd.DataFrame, out: pd.DataFrame, cfg: SplitConfig) -> None:
    """Independent re-derivation of what the partition must look like."""
    assert out["record_id"].tolist() == recs["record_id"].tolist()
    assert out["split"].isin(SPLITS).all()
    assert (out["species"].isna() == (out["split"] == "pretrain")).all()
    counts = recs["species"].value_counts()
    by_species = out.dropna(subset=["species"]).groupby("species")["split"].agg(lambda s: s.value_counts().to_dict())
    seen = {sp for sp, d in by_species.items() if set(d) & set(SEEN)}
    val_u = {sp for sp, d in by_species.items() if set(d) & set(UNSEEN_VAL)}
    test_u = {sp for sp, d in by_species.items() if set(d) & set(UNSEEN_TEST)}
    assert not (seen & val_u) and not (seen & test_u) and not (val_u & test_u)
    common = {sp for sp, n in counts.items() if n >= cfg.tail_threshold}
    tail = {sp for sp, n in counts.items() if 2 <= n < cfg.tail_threshold}
    assert seen <= common and tail <= (val_u | test_u)
    assert len(seen) == int((1 - Fraction(str(cfg.unseen_species_fraction))) * len(common))
    for sp, n in counts.items():
        d = by_species[sp]
        if n == 1:
            assert d == {"single_species": 1}
        elif sp in seen:
            f = [Fraction(str(x)) for x in cfg.seen_fractions]
            want = [int(f[0] * n), int(f[1] * n), int(f[2] * n)]
            want.append(n - sum(want))
            assert [d.get(s, 0) for s in SEEN] == want, (sp, n, d)
        else:
            q = int(Fraction(str(cfg.unseen_query_fraction)) * n)
            names = UNSEEN_VAL if sp in val_u else UNSEEN_TEST
            assert [d.get(s, 0) for s in names] == [q, n - q] and sum(d.values()) == n


def test_invariants_on_synthetic_long_tail():
    rng = np.random.default_rng(0)
    sizes = np.minimum(rng.zipf(1.6, size=300), 400)
    recs = _records({f"Genus{i} species{i}": int(n) for i, n in enumerate(sizes)} | {None: 50})
    recs = recs.sample(frac=1.0, random_state=1).reset_index(drop=True)
    for cfg in (SplitConfig(), SplitConfig(seed=7, unseen_species_fraction=0.35, tail_threshold=5,
                                           seen_fractions=(0.6, 0.2, 0.1, 0.1), unseen_query_fraction=0.3)):
        _check_invariants(recs, assign_splits(recs, cfg), cfg)


def test_invariants_on_real_bold_records(shared_data):
    from clibd_toolkit.readers import read_records

    recs = read_records(shared_data / "bold-insect-coi" / "bold_insect_coi5p.tsv.gz").records
    cfg = SplitConfig()
    out = assign_splits(recs, cfg)
    _check_invariants(recs, out, cfg)
    unseen = out.loc[out["split"].isin(UNSEEN_VAL + UNSEEN_TEST), "species"].nunique()
    seen = out.loc[out["split"].isin(SEEN), "species"].nunique()
    assert abs(unseen / (seen + unseen) - 0.2) < 0.1  # README: a CLIBD-style split leaves ~20 % of species unseen


def test_deterministic_seeded_and_row_order_free():
    recs = _records({f"S{i}": 5 + (i * 7) % 30 for i in range(60)} | {None: 10})
    a = assign_splits(recs, SplitConfig(seed=11))
    b = assign_splits(recs, SplitConfig(seed=11))
    assert a["split"].tolist() == b["split"].tolist()
    c = assign_splits(recs, SplitConfig(seed=12))
    assert a["split"].tolist() != c["split"].tolist()
    shuffled = recs.sample(frac=1.0, random_state=5)
    d = assign_splits(shuffled, SplitConfig(seed=11)).set_index("record_id").loc[recs["record_id"], "split"]
    assert d.tolist() == a["split"].tolist()
    assert recs.columns.tolist() == ["record_id", "species"]  # input not modified


def test_ensure_splits():
    recs = _records({"A": 12, None: 2})
    out, applied = ensure_splits(recs)
    assert applied and out["split"].notna().all()
    kept, applied = ensure_splits(out)
    assert not applied and kept is out
    partial = out.copy()
    partial.loc[[0, 3], "split"] = None
    with pytest.raises(DataError, match=r"2 of 14 records have no split .*A-000"):
        ensure_splits(partial)


def test_split_summary_matches_naive_counts():
    recs = _records({f"S{i}": 3 + i for i in range(20)} | {None: 7})
    out = assign_splits(recs)
    summary = split_summary(out).set_index("split")
    for split, part in out.groupby("split"):
        assert summary.loc[split, "n_records"] == len(part)
        assert summary.loc[split, "n_species"] == part["species"].nunique()
        assert summary.loc[split, "n_unlabelled"] == part["species"].isna().sum()
    assert summary.loc["total", "n_records"] == len(out) and summary.loc["total", "n_species"] == 20
    assert summary.loc["train", "role"] == "train" and summary.loc["seen_keys", "role"] == "key"
    assert summary.loc["test_unseen", "role"] == "query" and summary.loc["pretrain", "role"] == "train"
    order = [s for s in summary.index if s != "total"]
    assert order == [s for s in SPLITS if s in order]
    with pytest.raises(DataError, match="no 'split' column"):
        split_summary(recs)


def test_config_validation_and_roundtrip(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'tail_threshold'"):
        SplitConfig.from_dict({"tail_treshold": 5})
    with pytest.raises(ConfigError, match="seen_fractions"):
        SplitConfig(seen_fractions=(0.7, 0.1, 0.1))
    with pytest.raises(ConfigError, match="summing to 1"):
        SplitConfig(seen_fractions=(0.7, 0.2, 0.1, 0.1))
    with pytest.raises(ConfigError, match="unseen_species_fraction"):
        SplitConfig(unseen_species_fraction=1.0)
    with pytest.raises(ConfigError, match="tail_threshold"):
        SplitConfig(tail_threshold=1)
    cfg = SplitConfig(seed=5, seen_fractions=(0.8, 0.1, 0.05, 0.05))
    cfg.save(tmp_path / "split.json")
    assert SplitConfig.load(tmp_path / "split.json") == cfg
    with pytest.raises(DataError, match="species"):
        assign_splits(pd.DataFrame({"record_id": ["a"]}))
