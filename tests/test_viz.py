"""Figure functions of clibd_toolkit.viz, checked against the tables they draw (independent pandas/numpy/sklearn
computations), outside any notebook."""
from __future__ import annotations

import base64
import io
import json
import math
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from PIL import Image

from clibd_toolkit import viz
from clibd_toolkit.errors import ConfigError, DataError
from clibd_toolkit.schema import RANKS
from clibd_toolkit.store import META_COLUMNS, EmbeddingSet

ORDERS = {"Diptera": {"Muscidae": ["Musca", "Fannia"]}, "Hymenoptera": {"Apidae": ["Apis"], "Vespidae": ["Vespa"]}}


def _lineage() -> list[tuple[str, str, str, str]]:
    out = []
    for order, families in ORDERS.items():
        for family, genera in families.items():
            for genus in genera:
                for k in range(2):
                    out.append((order, family, genus, f"{genus} sp{k}"))
    return out


@pytest.fixture(scope="module")
def embeddings() -> EmbeddingSet:
    """60 records of 10 species; species clusters in a 16-d space; some records lack an image or a label."""
    rng = np.random.default_rng(0)
    lineage = _lineage()
    rows, centres = [], {sp: rng.normal(size=16) for *_, sp in lineage}
    for i in range(60):
        o, f, g, s = lineage[i % len(lineage)]
        unlabelled = i % 13 == 0
        rows.append({"record_id": f"R{i:03d}", "order": o, "family": f, "genus": g,
                     "species": pd.NA if unlabelled else s, "bin_uri": f"BOLD:{s[:3]}", "split": "train"})
    meta = pd.DataFrame(rows, columns=list(META_COLUMNS))
    truth = [lineage[i % len(lineage)][3] for i in range(60)]

    def vectors(noise: float) -> np.ndarray:
        v = np.stack([centres[s] + noise * rng.normal(size=16) for s in truth]).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    image = vectors(0.3)
    image[[5, 17]] = np.nan  # two records without an image
    return EmbeddingSet(meta, {"image": image, "dna": vectors(0.1), "text": vectors(0.0)})


@pytest.fixture(scope="module")
def projection(embeddings) -> pd.DataFrame:
    return viz.umap_project(embeddings, seed=0, n_neighbors=8)


# --- umap_project -----------------------------------------------------------------------------------------------


def test_umap_project_one_point_per_record_and_modality(embeddings, projection):
    counts = projection["modality"].value_counts()
    assert counts["image"] == 58  # two records lack an image
    assert counts["dna"] == 60
    # text: one point per distinct taxonomy (labelled species + the unlabelled records' genus-level strings)
    distinct = embeddings.metadata[list(RANKS)].astype(object).fillna("?").drop_duplicates()
    assert counts["text"] == len(distinct)
    assert list(projection.columns) == list(viz.PROJECTION_COLUMNS)
    assert projection[["x", "y"]].notna().all().all()
    # each point carries its own record's taxonomy
    meta = embeddings.metadata.set_index("record_id")
    for row in projection.sample(20, random_state=0).itertuples(index=False):
        assert row.genus == meta.at[row.record_id, "genus"]


def test_umap_project_is_seeded_and_separates_species(embeddings, projection):
    again = viz.umap_project(embeddings, seed=0, n_neighbors=8)
    np.testing.assert_allclose(again[["x", "y"]].to_numpy(), projection[["x", "y"]].to_numpy())
    # DNA points of a species sit closer together than to other species (the 16-d clusters survive in 2-D)
    dna = projection[(projection["modality"] == "dna")].dropna(subset=["species"])
    centres = dna.groupby("species")[["x", "y"]].mean()
    within = dna.apply(lambda r: math.dist((r.x, r.y), centres.loc[r.species]), axis=1).mean()
    between = np.mean([math.dist(a, b) for i, a in enumerate(centres.to_numpy())
                       for b in centres.to_numpy()[i + 1:]])
    assert within < between / 3


def test_umap_project_subsets(embeddings):
    ids = [f"R{i:03d}" for i in range(0, 60, 3)]
    sub = viz.umap_project(embeddings, "dna", record_ids=ids, seed=1, n_neighbors=5)
    assert sorted(sub["record_id"]) == sorted(ids)
    sampled = viz.umap_project(embeddings, ["dna"], max_records=25, seed=1, n_neighbors=5)
    assert len(sampled) == 25 and sampled["record_id"].is_unique


def test_umap_project_bad_input(embeddings):
    with pytest.raises(ConfigError, match="unknown modality"):
        viz.umap_project(embeddings, "audio")
    no_text = EmbeddingSet(embeddings.metadata, {"dna": embeddings.vectors["dna"]})
    with pytest.raises(ConfigError, match="no \\['image'\\] vectors"):
        viz.umap_project(no_text, "image,dna")
    with pytest.raises(DataError, match="at least 4"):
        viz.umap_project(embeddings, "dna", record_ids=["R000", "R001"])


# --- plot_latent_space --------------------------------------------------------------------------------------------


def _marker_traces(fig: go.Figure) -> list:
    return [t for t in fig.data if t.mode == "markers"]


def test_latent_space_traces_points_and_colours(projection):
    fig = viz.plot_latent_space(projection, "family")
    markers = _marker_traces(fig)
    assert all(isinstance(t, go.Scattergl) for t in fig.data)  # WebGL throughout
    assert sum(len(t.x) for t in markers) == len(projection)
    # one legend entry per family (its image, DNA and text traces toggle together), each trace holding that
    # family's points of one modality, drawn with that modality's symbol
    assert sorted(t.name for t in markers if t.showlegend is not False) == sorted(projection["family"].unique())
    for family, group in projection.groupby("family"):
        traces = [t for t in markers if t.name == family]
        assert sum(len(t.x) for t in traces) == len(group)
        assert len({t.marker.color for t in traces}) == 1 and {t.legendgroup for t in traces} == {family}
    for t in markers:
        kinds = {row[1] for row in t.customdata}  # customdata: id, modality, order, family, ...
        assert len(kinds) == 1 and t.marker.symbol == viz.MODALITY_SYMBOLS[kinds.pop()]
        assert {row[3] for row in t.customdata} == {t.name}


def test_latent_space_links_join_image_and_dna_of_the_same_record(projection):
    fig = viz.plot_latent_space(projection, "order", max_links=1000)
    (links,) = [t for t in fig.data if t.mode == "lines"]
    xs, ys = np.asarray(links.x, dtype=float), np.asarray(links.y, dtype=float)
    assert len(xs) == 3 * 58  # every record with both an image and a DNA point
    assert np.isnan(xs[2::3]).all()
    image = projection[projection["modality"] == "image"].set_index("record_id")
    dna = projection[projection["modality"] == "dna"].set_index("record_id")
    pairs = {(round(float(image.at[r, "x"]), 4), round(float(image.at[r, "y"]), 4)):
             (round(float(dna.at[r, "x"]), 4), round(float(dna.at[r, "y"]), 4)) for r in image.index}
    for a in range(0, len(xs), 3):
        start = (round(xs[a], 4), round(ys[a], 4))
        assert pairs[start] == (round(xs[a + 1], 4), round(ys[a + 1], 4))
    few = viz.plot_latent_space(projection, "order", max_links=5)
    assert len([t for t in few.data if t.mode == "lines"][0].x) == 15
    assert not [t for t in viz.plot_latent_space(projection, links=False).data if t.mode == "lines"]


def test_latent_space_many_taxa_and_unlabelled(projection):
    fig = viz.plot_latent_space(projection, "species", max_legend=3)
    markers = _marker_traces(fig)
    assert sorted(t.name.split()[0] for t in markers) == ["dna", "image", "text"]
    assert sum(len(t.x) for t in markers) == len(projection)
    # numeric colour codes on a stepwise scale: every point of one species gets the same colour, unlabelled grey
    scale = markers[0].marker.colorscale
    n = len(scale) // 2
    colour_of = {i: scale[2 * i][1] for i in range(n)}
    seen: dict[str, str] = {}
    for t in markers:
        assert t.marker.cmin == -0.5 and t.marker.cmax == n - 0.5
        for code, row in zip(t.marker.color, t.customdata):
            assert seen.setdefault(row[5], colour_of[int(code)]) == colour_of[int(code)]
    assert seen[viz.UNLABELLED] == "#b0b0b0"
    assert len(set(seen.values())) == len(seen)  # distinct species, distinct colours
    labelled = viz.plot_latent_space(projection, "species")
    names = [t.name for t in _marker_traces(labelled) if t.showlegend is not False]
    assert names[-1] == viz.UNLABELLED  # listed last


def test_latent_space_thumbnails_and_errors(projection):
    thumbs = {"R000": "data:image/jpeg;base64,AAA", "R005": "data:image/jpeg;base64,BBB"}  # R005 has no image point
    fig = viz.plot_latent_space(projection, thumbnails=thumbs)
    assert fig.layout.meta == {"thumbnails": {"R000": "data:image/jpeg;base64,AAA"}}
    with pytest.raises(ConfigError, match="unknown rank"):
        viz.plot_latent_space(projection, "kingdom")
    with pytest.raises(DataError, match="lacks columns"):
        viz.plot_latent_space(projection.drop(columns=["x"]))


def test_filter_projection_and_link_lengths(projection):
    sub = viz.filter_projection(projection, order="Hymenoptera", family="all", genus=None)
    expected = projection[projection["order"] == "Hymenoptera"]
    assert len(sub) == len(expected) and set(sub["family"]) == {"Apidae", "Vespidae"}
    assert len(viz.filter_projection(projection, order="Diptera", genus="Apis")) == 0
    lengths = viz.link_lengths(projection).set_index("record_id")["distance"]
    by_key = {(r.record_id, r.modality): (r.x, r.y) for r in projection.itertuples(index=False)}
    for rid, d in lengths.items():  # naive loop
        (x1, y1), (x2, y2) = by_key[(rid, "image")], by_key[(rid, "dna")]
        assert d == pytest.approx(math.hypot(x1 - x2, y1 - y2), rel=1e-6)
    assert len(lengths) == 58


def test_image_thumbnails(tmp_path):
    Image.new("RGB", (200, 100), (255, 0, 0)).save(tmp_path / "a.png")
    buf = io.BytesIO()
    Image.new("RGB", (30, 60), (0, 0, 255)).save(buf, format="PNG")
    records = pd.DataFrame({"record_id": ["a", "b", "c"], "image": [str(tmp_path / "a.png"), buf.getvalue(), pd.NA]})
    thumbs = viz.image_thumbnails(records, size=50)
    assert set(thumbs) == {"a", "b"}
    decoded = Image.open(io.BytesIO(base64.b64decode(thumbs["a"].split(",", 1)[1])))
    assert decoded.format == "JPEG" and decoded.size == (50, 25)
    assert decoded.getpixel((25, 12))[0] > 200  # still red
    assert list(viz.image_thumbnails(records, ["b", "a"], max_images=1)) == ["b"]
    with pytest.raises(DataError, match="'zz' is not in the records"):
        viz.image_thumbnails(records, ["zz"])


# --- training, accuracy, comparison -------------------------------------------------------------------------------


def test_loss_curve():
    history = pd.DataFrame({"epoch": [1, 1, 1, 2, 2], "step": [1, 2, 3, 4, 5], "loss": [4.0, 3.0, 2.0, 1.5, 0.5],
                            "lr": [1e-4, 5e-4, 3e-4, 2e-4, 1e-5], "logit_scale": [14.3] * 5})
    fig = viz.plot_loss_curve(history)
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["loss (step)"].y) == [4.0, 3.0, 2.0, 1.5, 0.5]
    epoch = by_name["loss (epoch mean)"]
    assert list(epoch.x) == [3, 5] and list(epoch.y) == pytest.approx([3.0, 1.0])
    assert list(by_name["learning rate"].y) == list(history["lr"])
    with pytest.raises(DataError, match="empty"):
        viz.plot_loss_curve(history.iloc[:0])
    with pytest.raises(DataError, match="lacks columns"):
        viz.plot_loss_curve(history.drop(columns=["lr"]))


def _rows() -> pd.DataFrame:
    rows = []
    for q, k in (("image", "dna"), ("dna", "dna")):
        for split, base in (("seen", 0.8), ("unseen", 0.4), ("harmonic_mean", 0.5)):
            for i, rank in enumerate(RANKS):
                for kk in (1, 5):
                    value = base - 0.1 * i + (0.05 if kk == 5 else 0) + (0.1 if q == "dna" else 0)
                    rows.append((q, k, split, rank, kk, value, value - 0.02, 10))
    return pd.DataFrame(rows, columns=["query", "key", "split", "rank", "k", "micro", "macro", "n"])


def test_retrieval_accuracy_bars_and_chance():
    rows = _rows()
    chance = rows.assign(micro=0.01, macro=0.02)
    fig = viz.plot_retrieval_accuracy(rows, chance, split="unseen", metric="macro")
    bars = [t for t in fig.data if isinstance(t, go.Bar)]
    assert [t.name for t in bars] == list(RANKS)
    for t in bars:
        expected = rows[(rows["split"] == "unseen") & (rows["k"] == 1) & (rows["rank"] == t.name)]
        assert list(t.x) == [f"{q}->{k}" for q, k in zip(expected["query"], expected["key"])]
        np.testing.assert_allclose(t.y, 100 * expected["macro"].to_numpy())
    ticks = [t for t in fig.data if isinstance(t, go.Scatter)]
    assert len(ticks) == 4 and all(np.allclose(t.y, 2.0) for t in ticks)
    with pytest.raises(DataError, match="no metric rows"):
        viz.plot_retrieval_accuracy(rows, k=3)
    with pytest.raises(ConfigError, match="metric"):
        viz.plot_retrieval_accuracy(rows, metric="f1")


def test_metric_changes_colours_by_status():
    from clibd_toolkit.evaluate import compare_metrics

    before = _rows()
    after = before.copy()
    after.loc[0, "macro"] += 0.2
    after.loc[2, "macro"] -= 0.2  # family, k=1
    comparison = compare_metrics(after, before, tolerance=0.01)
    fig = viz.plot_metric_changes(comparison, k=before.loc[0, "k"], splits=("seen",))
    (bar,) = fig.data
    deltas = dict(zip(bar.y, bar.x))
    colours = dict(zip(bar.y, bar.marker.color))
    improved = f"image->dna {before.loc[0, 'rank']} seen"
    assert deltas[improved] == pytest.approx(20.0) and colours[improved] == "#2ca02c"
    regressed = [label for label, d in deltas.items() if d < -1]
    assert len(regressed) == 1 and colours[regressed[0]] == "#d62728"
    assert sum(1 for c in colours.values() if c == "#999999") == len(deltas) - 2


# --- per-taxon ----------------------------------------------------------------------------------------------------


def _per_taxon() -> tuple[pd.DataFrame, pd.DataFrame]:
    lineage = pd.DataFrame(_lineage(), columns=list(RANKS))
    rows = []
    for rank in RANKS:
        for i, taxon in enumerate(sorted(lineage[rank].unique())):
            rows.append(("image", "dna", "unseen", rank, taxon, 1, (i % 4) / 4, 2 + i % 3, 1 + i))
    per_taxon = pd.DataFrame(rows, columns=["query", "key", "split", "rank", "taxon", "k", "accuracy", "n_queries",
                                            "n_keys"])
    return per_taxon, lineage


def test_taxon_tree_paths():
    per_taxon, lineage = _per_taxon()
    tree = viz.taxon_tree(per_taxon, lineage, query="image", key="dna", split="unseen").set_index("id")
    assert tree.at["Hymenoptera/Vespidae/Vespa/Vespa sp1", "parent"] == "Hymenoptera/Vespidae/Vespa"
    assert tree.at["Diptera", "parent"] == ""
    assert tree.at["Diptera/Muscidae/Fannia", "rank"] == "genus"
    assert len(tree) == len(per_taxon)
    # a family with no evaluated row still appears, so that its genera hang somewhere
    without = per_taxon[per_taxon["taxon"] != "Apidae"]
    tree2 = viz.taxon_tree(without, lineage, query="image", key="dna", split="unseen").set_index("id")
    assert "Hymenoptera/Apidae" in tree2.index and math.isnan(tree2.at["Hymenoptera/Apidae", "accuracy"])
    with pytest.raises(DataError, match="no per-taxon rows"):
        viz.taxon_tree(per_taxon, lineage, query="dna", key="dna", split="unseen")


def test_taxon_accuracy_sunburst_and_treemap():
    per_taxon, lineage = _per_taxon()
    tree = viz.taxon_tree(per_taxon, lineage, query="image", key="dna", split="unseen")
    for kind, cls in (("sunburst", go.Sunburst), ("treemap", go.Treemap)):
        fig = viz.plot_taxon_accuracy(per_taxon, lineage, query="image", key="dna", split="unseen", kind=kind)
        (trace,) = fig.data
        assert isinstance(trace, cls)
        assert list(trace.ids) == list(tree["id"]) and list(trace.parents) == list(tree["parent"])
        assert list(trace.values) == list(tree["n_queries"])
        np.testing.assert_allclose(trace.marker.colors, tree["accuracy"].to_numpy())
    with pytest.raises(ConfigError, match="sunburst"):
        viz.plot_taxon_accuracy(per_taxon, lineage, query="image", key="dna", split="unseen", kind="pie")


def test_accuracy_vs_references_and_worst_taxa():
    per_taxon, _ = _per_taxon()
    species = per_taxon[per_taxon["rank"] == "species"]
    fig = viz.plot_accuracy_vs_references(per_taxon, query="image", key="dna", split="unseen")
    (trace,) = fig.data
    np.testing.assert_allclose(trace.y, 100 * species["accuracy"].to_numpy())
    assert np.all(np.abs(np.asarray(trace.x) - species["n_keys"].to_numpy()) <= 0.15)  # jitter only
    worst = viz.worst_taxa(per_taxon, query="image", key="dna", split="unseen", n=4)
    # by hand: lowest accuracy first, more queries first among equals, then name
    expected = sorted(species.itertuples(index=False), key=lambda r: (r.accuracy, -r.n_queries, r.taxon))[:4]
    assert list(worst["taxon"]) == [r.taxon for r in expected]
    assert list(worst.columns) == ["taxon", "accuracy", "n_queries", "n_keys"]


class _TableParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.head, self._in = [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        if tag == "td":
            self.rows[-1].append(dict(attrs)["data-value"])
        self._in = tag

    def handle_data(self, data):
        if self._in == "th":
            self.head.append(data)


def test_sortable_table_html():
    df = pd.DataFrame({"taxon": ["<b>x</b>", "y"], "accuracy": [0.25, np.nan], "n": [3, 4]})
    text = viz.sortable_table_html(df, table_id="t1", percent=["accuracy"])
    parser = _TableParser()
    parser.feed(text)
    assert parser.head == ["taxon", "accuracy", "n"]
    body = [r for r in parser.rows if r]
    assert body == [["<b>x</b>", "0.25", "3"], ["y", "", "4"]]
    assert "&lt;b&gt;x&lt;/b&gt;" in text and "<b>x</b>" not in text.replace('data-value="&lt;b&gt;', "")
    assert "25.0%" in text and "getElementById('t1')" in text


# --- unseen species ---------------------------------------------------------------------------------------------


def test_cluster_figures(projection):
    from clibd_toolkit.cluster import ClusterResult

    dna = projection[projection["modality"] == "dna"]
    labels = pd.factorize(dna["genus"])[0]
    result = ClusterResult(labels=labels, record_ids=dna["record_id"].to_numpy(object),
                           species=dna["species"].to_numpy(object), bins=dna["bin_uri"].to_numpy(object),
                           scores={"n_clusters": 6, "n_records": 60,
                                   "species": {"ami": 0.7, "ari": 0.5, "v_measure": 0.8, "n_true": 10},
                                   "bin_uri": {"ami": 0.6, "ari": 0.4, "v_measure": 0.75, "n_true": 10}})
    fig = viz.plot_cluster_comparison(dna, result.assignments())
    left, right = fig.data
    assert len(left.x) == len(right.x) == len(dna)
    # same cluster -> same colour on the left; same species -> same colour on the right
    by_cluster = pd.DataFrame({"c": [row[1] for row in left.customdata], "colour": left.marker.color})
    assert (by_cluster.groupby("c")["colour"].nunique() == 1).all()
    by_species = pd.DataFrame({"s": [row[2] for row in right.customdata], "colour": right.marker.color})
    assert (by_species.groupby("s")["colour"].nunique() == 1).all()
    scores = viz.plot_cluster_scores(result.scores)
    assert [list(t.y) for t in scores.data] == [[0.7, 0.5, 0.8], [0.6, 0.4, 0.75]]
    with pytest.raises(DataError, match="no clustered record"):
        viz.plot_cluster_comparison(dna.assign(record_id="other"), result.assignments())


def test_novelty_roc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    novel = rng.random(200) < 0.3
    score = np.where(novel, rng.normal(0.6, 0.1, 200), rng.normal(0.4, 0.1, 200))
    score[0] = np.nan  # a query without an embedding is left out
    fig = viz.plot_novelty_roc(novel, score, threshold=0.5)
    auc = roc_auc_score(novel[1:], score[1:])
    curve = [t for t in fig.data if t.name.startswith("novelty score")][0]
    assert f"{auc:.3f}" in curve.name
    point = [t for t in fig.data if t.name.startswith("calibrated")][0]
    flagged = score[1:] > 0.5
    assert point.x[0] == pytest.approx(flagged[~novel[1:]].mean())
    assert point.y[0] == pytest.approx(flagged[novel[1:]].mean())
    with pytest.raises(DataError, match="both novel and known"):
        viz.plot_novelty_roc(np.zeros(5, bool), np.arange(5.0))


# --- identification -----------------------------------------------------------------------------------------------


def test_neighbours_figure_and_table(tmp_path):
    Image.new("RGB", (40, 40), (0, 200, 0)).save(tmp_path / "r1.png")
    reference = pd.DataFrame({"record_id": ["r1", "r2"], "image": [str(tmp_path / "r1.png"), pd.NA],
                              "order": ["O", "O"], "family": ["F", "F"], "genus": ["G", "H"],
                              "species": ["G a", "H b"]})
    row = pd.Series({"record_id": "q", "neighbour_ids": "r1|r2", "neighbour_scores": "0.9100|0.5000",
                     "predicted_order": "O", "predicted_family": "F", "predicted_genus": "G",
                     "predicted_species": "G a", "similarity": 0.91, "novel": True, "identified_rank": "genus",
                     "score_order": 1.0, "score_family": 1.0, "score_genus": 0.6, "score_species": 0.6,
                     "identified_order": "O", "identified_family": "F", "identified_genus": "G",
                     "identified_species": pd.NA})
    fig = viz.plot_neighbours(row, reference, query_image=str(tmp_path / "r1.png"))
    kinds = [type(t).__name__ for t in fig.data]
    assert kinds == ["Image", "Image", "Scatter"]  # query picture, r1's picture, r2 has none
    titles = [a.text for a in fig.layout.annotations]
    assert "<b>query</b>" in titles and "#1 sim 0.910" in titles and "#2 sim 0.500" in titles
    assert "NEW species" in fig.layout.title.text and "genus" in fig.layout.title.text
    assert "query)" not in fig.layout.title.text  # no query_modality in this row: nothing claimed
    for modality, kind in (("image", "photo"), ("dna", "barcode")):
        titled = viz.plot_neighbours(pd.concat([row, pd.Series({"query_modality": modality})]), reference)
        assert titled.layout.title.text.startswith(f"q ({kind} query): nearest reference is ")
    via_queries = viz.plot_neighbours(row, reference, queries=pd.DataFrame({"record_id": ["q"],
                                                                              "image": [str(tmp_path / "r1.png")]}))
    assert [type(t).__name__ for t in via_queries.data] == kinds
    table = viz.identification_table(row)
    assert list(table["predicted"]) == ["O", "F", "G", "G a"]
    assert list(table["reported"]) == ["O", "F", "G", "-"]
    with pytest.raises(DataError, match="no neighbours"):
        viz.plot_neighbours(row.drop(["neighbour_ids"]), reference)


# --- rendering ----------------------------------------------------------------------------------------------------


def test_offline_renderer_uses_the_plotly_mimetype_and_needs_nothing_from_the_page():
    """Figures go out as plotly's mimetype (JupyterLab's extension draws it with its own plotly.js, so a reloaded
    tab or a reopened notebook still renders); the text/html is a short note, never plotly.js or a CDN."""
    import plotly.io as pio

    previous = pio.renderers.default
    try:
        name = viz.use_offline_renderer()
        assert pio.renderers.default == name and name.split("+") == [viz.RENDERER, viz.HOVER_RENDERER]
        fig = go.Figure(go.Bar(y=[1, 2]))
        bundle = pio.renderers._build_mime_bundle(fig.to_dict())
        assert set(bundle) == {viz.PLOTLY_MIME, "text/html"}
        figure = bundle[viz.PLOTLY_MIME]
        assert figure["data"][0]["type"] == "bar" and figure["config"] == {"responsive": True}
        assert figure["layout"]["height"] == 525
        html = bundle["text/html"]
        assert "clibd-plotly-fallback" in html and len(html) < 1000 and "<script" not in html
        assert "cdn" not in json.dumps(bundle).lower()
    finally:
        pio.renderers.default = previous


def test_hover_thumbnail_script_is_shown_only_next_to_figures_with_thumbnails(monkeypatch):
    import IPython.display
    import plotly.io as pio

    shown = []
    monkeypatch.setattr(IPython.display, "display_html", lambda html, raw=False: shown.append(html))
    previous = pio.renderers.default
    try:
        viz.use_offline_renderer()
        plain = go.Figure(go.Scattergl(x=[1], y=[1], customdata=[["r1"]]))
        pio.renderers._perform_external_rendering(plain.to_dict())
        assert shown == []
        with_thumbs = go.Figure(plain).update_layout(meta={"thumbnails": {"r1": "data:image/png;base64,AAAA"}})
        pio.renderers._perform_external_rendering(with_thumbs.to_dict())
    finally:
        pio.renderers.default = previous
    assert len(shown) == 1
    script = shown[0]
    assert "clibd-hover-thumbnail" in script and "MutationObserver" in script and "<script src" not in script
    # placed from the plot area's top-left corner (clear of the legend at the right), not the div's right edge
    assert "_fullLayout._size" in script and "right:" not in script


def test_figure_dict_html_draws_a_stored_figure_without_plotly_js():
    fig = go.Figure(go.Scattergl(x=[1, 2], y=[2, 1])).to_dict()
    fig["config"] = {"responsive": True, "displaylogo": False}
    html = viz.figure_dict_html(fig)
    assert "Plotly.newPlot" in html and "clibd-hover-thumbnail" in html and '"displaylogo": false' in html
    assert len(html) < 20_000 and "<script src" not in html and "cdn" not in html.lower()


def test_write_figures_share_one_plotly_js(tmp_path):
    figs = {"a": go.Figure(go.Bar(y=[1])), "b": go.Figure(go.Scatter(y=[2])), "skipped": None}
    paths = viz.write_figures(figs, tmp_path)
    assert set(paths) == {"a", "b"}
    assert (tmp_path / "plotly.min.js").stat().st_size > 1_000_000
    for p in paths.values():
        text = p.read_text()
        assert re.search(r'<script[^>]*src="plotly.min.js"', text) and "Plotly.newPlot" in text
        assert len(text) < 100_000  # plotly.js is not repeated per figure
    single = viz.write_figure(figs["a"], tmp_path / "single.html").read_text()
    assert len(single) > 1_000_000 and "<script src=" not in single  # fully self-contained
