"""Simulated specimen images: real, learnable taxonomic signal (scikit-learn against a shuffled-label control),
look-alike cryptic species, and the image settings."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from clibd_toolkit.simulator import SimulatorConfig, simulate_records
from clibd_toolkit.simulator.survey import Survey


def colour_features(data: bytes) -> np.ndarray:
    """Colour histograms (RGB and hue x saturation): rotation-invariant, nothing specific to the simulator."""
    img = Image.open(io.BytesIO(data)).convert("RGB").resize((32, 32))
    rgb = np.asarray(img, dtype=np.float32) / 255
    hsv = np.asarray(img.convert("HSV"), dtype=np.float32) / 255
    hist = [np.histogram(rgb[..., c], bins=8, range=(0, 1))[0] for c in range(3)]
    hs = np.histogram2d(hsv[..., 0].ravel(), hsv[..., 1].ravel(), bins=6, range=[[0, 1], [0, 1]])[0].ravel()
    return np.concatenate(hist + [hs]) / rgb[..., 0].size


@pytest.fixture(scope="module")
def image_survey() -> pd.DataFrame:
    cfg = SimulatorConfig(records=400, image_size=64, seed=5)
    return pd.concat(simulate_records(cfg), ignore_index=True)


def test_orders_are_learnable_from_images_and_shuffled_labels_are_not(image_survey):
    X = np.stack([colour_features(b) for b in image_survey["image"]])
    y = image_survey["order"].to_numpy()
    majority = pd.Series(y).value_counts(normalize=True).iloc[0]
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    accuracy = cross_val_score(clf, X, y, cv=4).mean()
    shuffled = cross_val_score(clf, X, np.random.default_rng(0).permutation(y), cv=4).mean()
    assert accuracy > majority + 0.3, (accuracy, majority)
    assert shuffled < majority + 0.1, (shuffled, majority)


def test_genera_are_learnable_within_an_order(image_survey):
    # finer signal: genera of the most common order, against the majority genus and a shuffled control
    top_order = image_survey["order"].value_counts().index[0]
    part = image_survey[image_survey["order"] == top_order]
    part = part[part["true_species"].str.split().str[0].map(
        part["true_species"].str.split().str[0].value_counts()) >= 8]
    X = np.stack([colour_features(b) for b in part["image"]])
    y = part["true_species"].str.split().str[0].to_numpy()
    assert len(set(y)) >= 3 and len(y) >= 60
    majority = pd.Series(y).value_counts(normalize=True).iloc[0]
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    accuracy = cross_val_score(clf, X, y, cv=3).mean()
    shuffled = cross_val_score(clf, X, np.random.default_rng(1).permutation(y), cv=3).mean()
    assert accuracy > majority + 0.2 and accuracy > shuffled + 0.2, (accuracy, shuffled, majority)


def test_cryptic_species_look_identical_but_differ_in_dna():
    survey = Survey(SimulatorConfig(records=10, image_size=48, cryptic_fraction=0.1, seed=6))
    tax = survey.taxonomy
    cryptic = [s for s in range(len(tax.species)) if tax.look_of[s] != s]
    assert len(cryptic) == round(0.1 * len(tax.species))
    renderer = survey.renderer
    for s in cryptic[:5]:
        sister = int(tax.look_of[s])
        assert tax.species_genus[s] == tax.species_genus[sister] and tax.species[s] != tax.species[sister]
        assert tax.cryptic_group[s] == tax.cryptic_group[sister] is not None
        # same specimen pose -> the very same photo
        a = renderer.encode(renderer.render(s, np.random.default_rng(99)))
        b = renderer.encode(renderer.render(sister, np.random.default_rng(99)))
        assert a == b
        # ... while an ordinary congener with the same pose looks different
        other = [o for o in np.flatnonzero(tax.species_genus == tax.species_genus[s]) if tax.look_of[o] == o
                 and o != sister]
        if other:
            c = renderer.encode(renderer.render(int(other[0]), np.random.default_rng(99)))
            assert c != a
    # their barcodes are those of distinct species (several % apart), not copies
    df = pd.concat(simulate_records(SimulatorConfig(records=3000, images=False, cryptic_fraction=0.1, seed=6,
                                                    truncated_rate=0, n_run_rate=0, ambiguity_rate=0)))
    seqs = df.groupby("true_species")["dna_barcode"].first()
    pairs = [(tax.species[s], tax.species[int(tax.look_of[s])]) for s in cryptic]
    dists = [np.mean([x != y for x, y in zip(seqs[a], seqs[b])]) for a, b in pairs if a in seqs and b in seqs]
    assert len(dists) >= 3 and min(dists) > 0.02


@pytest.mark.parametrize("fmt, magic, size", [("jpeg", b"\xff\xd8\xff", 96), ("png", b"\x89PNG", 40)])
def test_image_format_and_size(fmt, magic, size):
    chunk = next(simulate_records(SimulatorConfig(records=8, image_size=size, image_format=fmt)))
    for data in chunk["image"]:
        assert data.startswith(magic)
        img = Image.open(io.BytesIO(data))
        assert img.size == (size, size) and img.mode == "RGB"
        arr = np.asarray(img, dtype=np.float32)
        # a light plate background with a darker specimen on it
        assert np.median(arr) > 150 and np.percentile(arr.mean(axis=2), 2) < 120
