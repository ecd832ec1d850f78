"""Per-rank calibrated naming: on a reference whose geometry fixes the right answer for every query, the reported
rank is exactly the finest rank the query's taxon exists at; confidences are calibrated precisions; calibrations
belong to one reference; the CLI and the saved file."""
from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from clibd_toolkit import rank_calibration
from clibd_toolkit.errors import ConfigError, DataError
from clibd_toolkit.identification import identify
from clibd_toolkit.rank_calibration import RankCalibration, calibrate_ranks, decide, rank_features
from clibd_toolkit.store import EmbeddingSet

DIM = 96
SCALES = (4.0, 2.0, 1.0, 0.5)  # order, family, genus, species offsets; record noise 0.02 per dimension


class Tree:
    """Orders > families > genera > species, each a random direction added with a smaller scale: cosine similarity
    then orders the taxonomy (same species > same genus > same family > same order > other order)."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.directions: dict[tuple, np.ndarray] = {}

    def direction(self, path: tuple) -> np.ndarray:
        if path not in self.directions:
            v = self.rng.normal(size=DIM)
            self.directions[path] = v / np.linalg.norm(v)
        return self.directions[path]

    def vector(self, o: int, f: int, g: int, s: int) -> np.ndarray:
        path = (o, f, g, s)
        v = sum(scale * self.direction(path[: i + 1]) for i, scale in enumerate(SCALES))
        v = v + 0.02 * self.rng.normal(size=DIM)
        return v / np.linalg.norm(v)


def labels(o, f, g, s):
    return {"order": f"O{o}", "family": f"O{o}F{f}", "genus": f"O{o}F{f}G{g}", "species": f"O{o}F{f}G{g}S{s}"}


def embedding_set(rows: list[tuple], vectors: list[np.ndarray], prefix: str) -> EmbeddingSet:
    meta = pd.DataFrame([{"record_id": f"{prefix}{i}", **labels(*r), "bin_uri": pd.NA, "split": pd.NA}
                         for i, r in enumerate(rows)])
    return EmbeddingSet(meta, {"dna": np.asarray(vectors, dtype=np.float32)})


@pytest.fixture(scope="module")
def world():
    tree = Tree(0)
    rows = [(o, f, g, s) for o in range(3) for f in range(3) for g in range(3) for s in range(3) for _ in range(5)]
    reference = embedding_set(rows, [tree.vector(*r) for r in rows], "r")
    # queries whose right answer is known: (taxon path, the finest rank present in the reference)
    cases = []
    for i in range(6):
        o, f, g, s = i % 3, (i // 3) % 3, i % 3, (i + 1) % 3
        cases += [((o, f, g, s), "species"), ((o, f, g, 7 + i), "genus"), ((o, f, 7 + i, 0), "family"),
                  ((o, 7 + i, 0, 0), "order"), ((7 + i, 0, 0, 0), None)]
    queries = embedding_set([c for c, _ in cases], [tree.vector(*c) for c, _ in cases], "q")
    calibration = calibrate_ranks(reference, query_modality="dna", key_modality="dna", seed=0)
    return reference, queries, [r for _, r in cases], calibration


def test_reported_rank_is_the_finest_rank_present(world):
    reference, queries, expected, calibration = world
    table = identify(queries, reference, query_modality="dna", key_modality="dna", novelty=calibration)
    got = [None if pd.isna(r) else r for r in table["identified_rank"]]
    assert got == expected
    for row, want in zip(table.itertuples(), expected):
        if want is not None:  # the reported name is the query's own taxon at that rank, with its confidence
            truth = labels(*[int(x) for x in __import__("re").findall(r"\d+", queries.metadata.loc[row.Index,
                                                                                                   "species"])])
            assert getattr(row, f"identified_{want}") == truth[want]
            assert row.confidence >= 0.95 and row.confidence == getattr(row, f"confidence_{want}")
    assert (table["novel"].to_numpy(dtype=bool) == np.array([e != "species" for e in expected])).all()


def test_confidences_shrink_towards_species_and_the_decision_is_a_prefix(world):
    reference, queries, _, calibration = world
    table = identify(queries, reference, query_modality="dna", key_modality="dna", novelty=calibration)
    conf = table[[f"confidence_{r}" for r in ("order", "family", "genus", "species")]].to_numpy()
    assert (np.diff(conf, axis=1) <= 1e-12).all()
    # decide() on a hand-made case: the finest rank at or above the bar
    decided = decide({"order": np.array([0.99, 0.99, 0.5]), "family": np.array([0.97, 0.96, 0.4]),
                      "genus": np.array([0.96, 0.2, 0.3]), "species": np.array([0.5, 0.1, 0.2])}, 0.95)
    assert list(decided[:2]) == ["genus", "family"] and pd.isna(decided[2])


def test_simulation_diagnostics(world):
    _, _, _, calibration = world
    for rank in ("order", "family", "genus", "species"):
        info = calibration.diagnostics[rank]
        assert info["calibrated"] and info["right_rate"]["novel"] == 0.0  # a held-out taxon is never right
        named = info["precision_of_named"]
        assert all(v is None or v >= 0.95 for v in named.values())


def test_rank_features_by_hand():
    scores = np.array([[0.9, 0.8, 0.7, 0.6], [0.9, 0.85, 0.8, 0.5]])
    codes = np.array([[1, 1, 2, 2], [3, 3, 3, 3]])
    centroid = np.array([-0.1, 0.3])
    f = rank_features(scores, codes, k_support=3, centroid=centroid)
    # margin: 0.9 - 0.7 (first other taxon); all agree -> 0.9 - the last similarity 0.5
    np.testing.assert_allclose(f[:, 1], [0.2, 0.4])
    np.testing.assert_allclose(f[:, 2], [(0.9 + 0.8) / 2.4, 1.0])
    np.testing.assert_allclose(f[:, 0], [0.9, 0.9])
    np.testing.assert_allclose(f[:, 3], [1.0, 1.0])  # one view: nothing to disagree with
    np.testing.assert_allclose(f[:, 4], centroid)  # the centroid margins as given
    # views: the share of the single views' nearest neighbours (positions 0 and 2; 1 and 3) of the nearest's taxon
    f = rank_features(scores, codes, k_support=3, leaders=np.array([[0, 2], [1, 3]]), centroid=centroid)
    np.testing.assert_allclose(f[:, 3], [0.5, 1.0])
    np.testing.assert_allclose(rank_features(scores, np.array([[-1, 1, 1, 1], [3, 3, 3, 3]]), 3,
                                             np.array([[0, 0], [2, 0]]), centroid=centroid)[:, 3], [0.0, 1.0])
    with pytest.raises(DataError, match="centroid margins"):
        rank_features(scores, codes, 3, centroid=np.zeros(3))


def test_centroid_margins_against_a_naive_loop():
    """Per query and rank: cosine to the nearest key's taxon centroid minus the best other taxon's, where a centroid
    is the unit mean of its species' unit means (records without a species: one more species), computed taxon by
    taxon from the labels; unlabelled nearest keys give 0; rows picks the keys out of a larger array."""
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(40, 8)).astype(np.float32)
    rows = rng.permutation(40)[:30]
    meta = pd.DataFrame({"order": ["A"] * 30, "family": rng.choice(["F1", "F2", "F3"], 30),
                         "genus": rng.choice(["G1", "G2", "G3", "G4", None], 30),
                         "species": [None if i % 9 == 4 else f"s{i % 7}" for i in range(30)]})
    queries = rng.normal(size=(9, 8)).astype(np.float32)
    nearest = rng.integers(0, 30, size=9)
    got = rank_calibration.centroid_margins(queries, rank_calibration.taxon_centroids(vectors, meta, rows), nearest,
                                            max_cells=5)  # tiny chunks: the chunking must not matter
    keys = vectors[rows].astype(np.float64)

    def unit(v):
        return v / np.linalg.norm(v)

    for rank in ("order", "family", "genus", "species"):
        taxa = sorted(set(meta[rank].dropna()))
        cents = {}
        for t in taxa:
            mine = meta[rank] == t
            units = [unit(keys[(mine & (meta["species"] == s)).to_numpy()].mean(axis=0))
                     for s in set(meta.loc[mine, "species"].dropna())]
            if meta.loc[mine, "species"].isna().any():
                units.append(unit(keys[(mine & meta["species"].isna()).to_numpy()].mean(axis=0)))
            cents[t] = unit(np.mean(units, axis=0))
        for i, q in enumerate(queries.astype(np.float64)):
            own = meta[rank][nearest[i]]
            if len(taxa) < 2 or pd.isna(own):
                want = 0.0
            else:
                want = q @ cents[own] - max(q @ cents[t] for t in taxa if t != own)
            assert got[rank][i] == pytest.approx(want, abs=1e-5), (rank, i)


def test_a_taxon_centroid_weighs_its_species_alike():
    """A genus of one species sampled 50 times and one sampled twice: its centroid lies halfway between them."""
    a, b = np.eye(4)[0], np.eye(4)[1]
    vectors = np.array([a] * 50 + [b] * 2, dtype=np.float32)
    meta = pd.DataFrame({"order": "O", "family": "F", "genus": "G", "species": ["A"] * 50 + ["B"] * 2})
    centroids = rank_calibration.taxon_centroids(vectors, meta)
    np.testing.assert_allclose(centroids.vectors["genus"][0], (a + b) / np.sqrt(2), atol=1e-6)
    np.testing.assert_allclose(centroids.vectors["species"], [a, b], atol=1e-6)


def test_a_mislabelled_nearest_record_is_named_less_surely():
    """The centroid feature at work: a query whose nearest records are a few records filed under another genus
    (mislabelled, or a stray lineage) sits nearer its own genus's centroid: the margin is negative, while a query
    whose nearest records are typical of their genus gets a positive one."""
    tree = Tree(1)
    rows = [(0, f, g, s) for f in range(2) for g in range(3) for s in range(3) for _ in range(6)]
    vectors = [tree.vector(*r) for r in rows]
    meta = pd.DataFrame([labels(*r) for r in rows])
    stray = [tree.vector(0, 0, 0, 5) for _ in range(3)]  # genus G0's barcodes filed as genus G1
    meta = pd.concat([meta, pd.DataFrame([labels(0, 0, 1, 0)] * 3)], ignore_index=True)
    centroids = rank_calibration.taxon_centroids(np.array(vectors + stray), meta)
    queries = np.array([tree.vector(0, 0, 0, 5), tree.vector(0, 0, 1, 1)])
    nearest = np.array([len(rows), rows.index((0, 0, 1, 1))])  # a stray record; a record of species G1S1
    margins = rank_calibration.centroid_margins(queries, centroids, nearest)["genus"]
    assert margins[0] < 0 < margins[1]


@pytest.mark.parametrize("width", [3, 4])
def test_a_calibration_saved_with_fewer_features_applies_as_fitted(world, width):
    """Files written before the views (three features) or the centroid feature (four) keep their meaning: their
    models use the first three or four features."""
    calibration = world[3]
    old = {r: None if m is None else {**m, **{k: m[k][:width] for k in ("mean", "scale", "coef")}}
           for r, m in calibration.models.items()}
    legacy = RankCalibration.from_dict({**calibration.to_dict(), "models": old})
    rng = np.random.default_rng(0)
    feats = {r: np.column_stack([rng.uniform(0.5, 1, 6), rng.uniform(0, 0.3, 6), rng.uniform(0, 1, 6),
                                 rng.choice([0.0, 0.5, 1.0], 6), rng.uniform(-0.2, 0.2, 6)]) for r in old}
    got = legacy.confidence(feats)
    running = np.zeros(6)
    for r in ("species", "genus", "family", "order"):  # by hand: standardise, logit, isotonic, max over finer ranks
        m = old[r]
        z = ((feats[r][:, :width] - m["mean"]) / np.asarray(m["scale"])) @ np.asarray(m["coef"]) + m["intercept"]
        running = np.maximum(running, np.interp(z, m["x"], m["y"]))
        np.testing.assert_allclose(got[r], running)
    broken = {r: None if m is None else {**m, "coef": m["coef"][:2]} for r, m in calibration.models.items()}
    with pytest.raises(ConfigError, match="coef: 5 numbers each"):
        RankCalibration.from_dict({**calibration.to_dict(), "models": broken})


def test_listing_more_neighbours_does_not_change_the_naming(world):
    """The features come from the calibration's own n_neighbours, however many neighbours k lists (the margin of
    a query whose neighbours all agree is measured to the last of them)."""
    reference, queries, _, calibration = world
    few, many = (identify(queries, reference, query_modality="dna", key_modality="dna", k=k, novelty=calibration)
                 for k in (5, calibration.n_neighbours + 15))
    assert many["neighbour_ids"].str.count(r"\|").eq(calibration.n_neighbours + 14).all()
    for column in ("identified_rank", "confidence", *(f"confidence_{r}" for r in ("order", "genus", "species"))):
        pd.testing.assert_series_equal(few[column], many[column])


def test_a_calibration_belongs_to_its_reference(world, tmp_path):
    reference, queries, _, calibration = world
    path = tmp_path / "cal.json"
    calibration.save(path)
    loaded = RankCalibration.load(path)
    assert loaded.models == json.loads(json.dumps(calibration.models)) and loaded.reference_checksum
    loaded.check_reference(reference)
    other = reference.subset(np.arange(len(reference) - 1))
    with pytest.raises(DataError, match="made on another reference library"):
        loaded.check_reference(other)


def test_single_order_reference_takes_the_family_confidence():
    tree = Tree(1)
    rows = [(0, f, g, s) for f in range(3) for g in range(3) for s in range(3) for _ in range(4)]
    reference = embedding_set(rows, [tree.vector(*r) for r in rows], "r")
    cal = calibrate_ranks(reference, query_modality="dna", key_modality="dna", n_repeats=1)
    assert cal.models["order"] is None and not cal.diagnostics["order"]["calibrated"]
    feats = {r: np.array([[0.9, 0.1, 1.0, 1.0, 0.05]]) for r in ("order", "family", "genus", "species")}
    conf = cal.confidence(feats)
    assert conf["order"][0] == conf["family"][0]
    with pytest.raises(DataError, match=r"3 columns.*similarity, margin, agreement, views, centroid"):
        cal.confidence({r: f[:, :3] for r, f in feats.items()})


def test_naming_summary_by_hand():
    from clibd_toolkit.rank_thresholds import naming_summary

    truth = pd.DataFrame({"order": ["A", "A", "A", "B"], "family": ["f", "f", "g", "h"],
                          "genus": ["x", "y", "z", "w"], "species": ["s1", "s2", "s3", "s4"]})
    identified = pd.DataFrame({"identified_rank": ["species", "genus", "family", pd.NA],
                               "identified_order": ["A", "A", "A", pd.NA], "identified_family": ["f", "f", "q", pd.NA],
                               "identified_genus": ["x", "x", pd.NA, pd.NA],
                               "identified_species": ["s1", pd.NA, pd.NA, pd.NA]})
    got = naming_summary(identified, truth)
    assert got["n"] == 4 and got["none"] == 0.25 and got["named"] == 0.75
    assert got["reported_rank"] == {"order": 0.0, "family": 0.25, "genus": 0.25, "species": 0.25}
    assert got["named_at_or_below"]["family"] == 0.75 and got["named_at_or_below"]["species"] == 0.25
    # right: the species s1; wrong: genus x for a y, family q for a g
    assert got["precision"] == pytest.approx(1 / 3)


def test_thresholds_keep_every_kind_of_query_right_by_hand():
    """Hand-made simulated queries: a novel genus whose genus confidence (0.9) would pass a single bar of 0.85 but
    is always wrong, known species at 0.9 that are right, novel orders at order confidence 0.97. At target 0.95 the
    genus bar must exceed 0.9, the species bar may drop to 0.9 or below, and the order bar must exceed 0.97."""
    from clibd_toolkit.rank_thresholds import fit_thresholds, group_outcomes

    n = 40
    conf = np.concatenate([np.tile([0.99, 0.99, 0.9, 0.1], (n, 1)),   # novel genus: right at order and family only
                           np.tile([0.99, 0.99, 0.99, 0.9], (n, 1)),  # known species: right everywhere
                           np.tile([0.97, 0.2, 0.1, 0.1], (n, 1))])   # novel order: never right
    right = np.concatenate([np.tile([True, True, False, False], (n, 1)), np.ones((n, 4), bool),
                            np.zeros((n, 4), bool)])
    groups = np.array(["novel_genus"] * n + ["known_species"] * n + ["novel_order"] * n)
    t = fit_thresholds(conf, right, groups, 0.95)
    assert t["genus"] > 0.9 and t["species"] <= 0.9 and t["order"] > 0.97
    out = group_outcomes(conf, right, groups, np.array([t[r] for r in ("order", "family", "genus", "species")]))
    assert out["novel_genus"]["precision"] == 1.0 and out["novel_genus"]["named"] == 1.0
    assert out["known_species"]["species"] == 1.0 and out["novel_order"]["named"] == 0.0
    # one bar of 0.85 for every rank, the old rule, names every novel genus at a wrong genus
    naive = group_outcomes(conf, right, groups, np.full(4, 0.85))
    assert naive["novel_genus"]["precision"] == 0.0


def test_untrained_taxa_play_the_novel_ones(caplog, monkeypatch):
    from clibd_toolkit.rank_calibration import _draw_untrained

    tree = Tree(2)
    rows = [(o, f, g, s) for o in range(2) for f in range(3) for g in range(2) for s in range(2) for _ in range(3)]
    ref = embedding_set(rows, [tree.vector(*r) for r in rows], "r")
    meta = ref.metadata
    unseen_family = meta["family"] == "O0F1"
    unseen_genus = meta["genus"] == "O1F2G0"
    unseen_records = (meta["species"] == "O0F0G0S0") & (meta.index % 3 == 0)
    untrained = (unseen_family | unseen_genus | unseen_records).to_numpy()
    has = np.ones(len(meta), bool)
    keys, queries = _draw_untrained(meta, "family", has, has, untrained, 0.2, 10_000, np.random.default_rng(0))
    assert set(queries["novel"]) == set(np.flatnonzero(unseen_family))
    assert set(queries["novel_below"]) == set(np.flatnonzero(unseen_genus))
    assert set(queries["known_species"]) == set(np.flatnonzero(unseen_records))
    assert not set(keys) & (set(queries["novel"]) | set(queries["novel_below"]) | set(queries["known_species"]))
    # no untrained order: one trained order plays the novel one, the families and records below stay untrained
    keys, queries = _draw_untrained(meta, "order", has, has, untrained, 0.2, 10_000, np.random.default_rng(0))
    novel_orders = set(meta["order"].iloc[queries["novel"]])
    assert len(novel_orders) == 1 and set(queries["novel"]) == set(np.flatnonzero(meta["order"].isin(novel_orders)))
    assert set(queries["novel_below"]) == set(np.flatnonzero(unseen_family & ~meta["order"].isin(novel_orders)))
    with caplog.at_level(logging.WARNING, logger="clibd_toolkit.rank_calibration"):
        cal = calibrate_ranks(ref, query_modality="dna", key_modality="dna", n_repeats=1,
                              trained_ids=set(meta["record_id"][~untrained]))
    assert cal.untrained_taxa and cal.diagnostics["family"]["untrained_taxa"]
    # the family's novel taxa were never trained on; the order's are a trained order held out in their place
    assert cal.diagnostics["family"]["novel_untrained"] and not cal.diagnostics["order"]["novel_untrained"]
    # flagged (>= 30 queries, < 20 taxa): only the novel order (36 records); its advice is not to train on fewer
    warned = [r.getMessage() for r in caplog.records if "few held-out taxa" in r.getMessage()]
    assert len(warned) == 1 and "(novel_order: 1)" in warned[0]
    assert "For novel_order the reference has few such taxa" in warned[0] and "did not train" not in warned[0]
    # with smaller groups counted, the untrained family (12 records), genera (18) and species are flagged so
    caplog.clear()
    monkeypatch.setattr(rank_calibration, "MIN_GROUP", 10)
    with caplog.at_level(logging.WARNING, logger="clibd_toolkit.rank_calibration"):
        calibrate_ranks(ref, query_modality="dna", key_modality="dna", n_repeats=1,
                        trained_ids=set(meta["record_id"][~untrained]))
    warned = [r.getMessage() for r in caplog.records if "few held-out taxa" in r.getMessage()]
    assert len(warned) == 1 and "novel_family: 1" in warned[0] and "novel_genus: 3" in warned[0]
    assert ("For novel_family, novel_genus, novel_species these are the reference taxa the model did not train"
            in warned[0])
    assert "For novel_order the reference has few such taxa" in warned[0]
    # the held-out taxa behind each kind of query, by hand: the one untrained family; the untrained genus and the
    # two genera of the untrained family
    assert cal.diagnostics["n_taxa"]["novel_family"] == 1
    assert cal.diagnostics["n_taxa"]["novel_genus"] == 3


def test_bars_resting_on_few_held_out_taxa_are_flagged(world, caplog, monkeypatch):
    reference, _, _, _ = world
    with caplog.at_level(logging.WARNING, logger="clibd_toolkit.rank_calibration"):
        cal = calibrate_ranks(reference, query_modality="dna", key_modality="dna", seed=0, n_repeats=1)
    # one draw per rank holds out 20 % of its taxa (at least one, never all): 1 of the 3 orders; 2 of the 9
    # families, and 1 family in each of the 2 remaining orders as the order draw's novel-below (the draws may repeat)
    n_taxa = cal.diagnostics["n_taxa"]
    assert n_taxa["novel_order"] == 1 and 2 <= n_taxa["novel_family"] <= 4
    warned = [r.getMessage() for r in caplog.records if "few held-out taxa" in r.getMessage()]
    assert len(warned) == 1 and f"novel_family: {n_taxa['novel_family']}" in warned[0]
    caplog.clear()
    monkeypatch.setattr(rank_calibration, "FEW_TAXA", 1)
    with caplog.at_level(logging.WARNING, logger="clibd_toolkit.rank_calibration"):
        calibrate_ranks(reference, query_modality="dna", key_modality="dna", seed=0, n_repeats=1)
    assert not [r for r in caplog.records if "few held-out taxa" in r.getMessage()]


def test_a_target_without_thresholds_is_refused(world):
    from clibd_toolkit.errors import ConfigError

    _, _, _, calibration = world
    assert set(calibration.thresholds) >= {"0.8", "0.9", "0.95", "0.99"}
    with pytest.raises(ConfigError, match="min_precision=0.93"):
        calibration.replace(min_precision=0.93).rank_thresholds()


def test_precision_coverage_figure_shows_each_kind_of_query_at_each_target(world):
    from clibd_toolkit import viz

    _, _, _, calibration = world
    fig = viz.plot_precision_coverage(calibration)
    outcomes = calibration.diagnostics["groups"]
    lines = [t for t in fig.data if t.showlegend is not False]
    assert {t.name for t in lines} <= {"novel order", "novel family", "novel genus", "novel species", "known species"}
    known = next(t for t in lines if t.name == "known species")
    want = [(outcomes[k]["known_species"]["named"], outcomes[k]["known_species"]["precision"])
            for k in sorted(outcomes, key=float) if outcomes[k]["known_species"]["precision"] is not None]
    assert list(zip(known.x, known.y)) == want
    marks = [t for t in fig.data if t.showlegend is False]
    assert len(marks) == len(lines)  # the current setting (0.95) is marked on every line
    assert all(f"MIN_PRECISION {calibration.min_precision:g}" in t.hovertemplate for t in marks)


def test_a_precision_resting_on_one_taxon_is_not_trusted():
    """96 of 100 novel-genus names right, but the 4 wrong ones are one whole taxon: counted per query the genus bar
    may drop to 0.9; counted over taxa (5 clusters) the lower bound is 0.96 - 1.645 * 0.048 = 0.88 < 0.95, by hand,
    so it may not."""
    from clibd_toolkit.rank_thresholds import fit_thresholds

    good = np.tile([0.99, 0.99, 0.5, 0.1], (96, 1))      # named at family, right
    bad = np.tile([0.99, 0.99, 0.9, 0.1], (4, 1))        # would be named at a wrong genus
    known = np.tile([0.99, 0.99, 0.9, 0.3], (50, 1))     # right at genus: gains from a lower genus bar
    conf = np.concatenate([good, bad, known])
    right = np.concatenate([np.tile([True, True, False, False], (100, 1)), np.tile([True, True, True, False], (50, 1))])
    groups = np.array(["novel_genus"] * 100 + ["known_species"] * 50)
    clusters = np.array([f"G{i // 24}" for i in range(96)] + ["G_bad"] * 4 + [f"S{i % 5}" for i in range(50)])
    assert fit_thresholds(conf, right, groups, 0.95)["genus"] <= 0.9
    assert fit_thresholds(conf, right, groups, 0.95, clusters=clusters, z=1.645)["genus"] > 0.9
