"""The official CLIBD feature pairs of :func:`evaluate_embeddings` against CLIBD's own evaluation code, re-typed.

The reference below follows ``bioscanclip/util/util.py`` of ``bioscan-ml/clibd`` (7d73f80): ``make_prediction``
(with a numpy brute-force inner product on the sklearn-normalised float32 vectors instead of
``faiss.IndexFlatIP``), ``top_k_micro_accuracy``, ``top_k_macro_accuracy``, the loop of
``inference_and_print_result`` (its dimension check included) and ``scripts/train_cl.py: compute_overall_acc``.
Vectors are continuous random draws, so no two keys tie for a query.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import normalize

from clibd_toolkit.errors import ConfigError
from clibd_toolkit.evaluate import EvalConfig, evaluate_embeddings, mean_top1
from clibd_toolkit.released_embeddings import read_released_embeddings
from clibd_toolkit.store import EmbeddingSet

LEVELS = ["order", "family", "genus", "species"]
All_TYPE_OF_FEATURES_OF_QUERY = ["encoded_image_feature", "encoded_dna_feature", "encoded_language_feature",
                                 "averaged_feature", "concatenated_feature"]
All_TYPE_OF_FEATURES_OF_KEY = All_TYPE_OF_FEATURES_OF_QUERY + ["all_key_features"]
#: official feature name -> the toolkit's
TOOLKIT_NAME = {"encoded_image_feature": "image", "encoded_dna_feature": "dna", "encoded_language_feature": "text",
                "averaged_feature": "image+dna", "concatenated_feature": "concat", "all_key_features": "all"}
TODAYS_PAIRS = ("image->image", "image->dna", "image->text", "dna->image", "dna->dna", "dna->text")


# --- the official evaluation, re-typed ------------------------------------------------------------------------------

def make_prediction(query_feature, keys_feature, keys_label, max_k=5):
    keys_feature = normalize(keys_feature, norm="l2", axis=1).astype(np.float32)
    query_feature = normalize(query_feature, norm="l2", axis=1).astype(np.float32)
    similarities = query_feature @ keys_feature.T  # faiss.IndexFlatIP: inner product, best first
    indices = np.argsort(-similarities, axis=1, kind="stable")[:, :max_k]
    pred_list = []
    for key_indices in indices:
        k_pred_in_diff_level = {}
        for level in LEVELS:
            if level not in k_pred_in_diff_level.keys():
                k_pred_in_diff_level[level] = []
            for i in key_indices:
                k_pred_in_diff_level[level].append(keys_label[i][level])
        pred_list.append(k_pred_in_diff_level)
    return pred_list


def top_k_micro_accuracy(pred_list, gt_list, k_list=None):
    total_samples = len(pred_list)
    k_micro_acc = {}
    for k in k_list:
        if k not in k_micro_acc.keys():
            k_micro_acc[k] = {}
        for level in LEVELS:
            correct_in_curr_level = 0
            for pred_dict, gt_dict in zip(pred_list, gt_list):
                pred_labels = pred_dict[level][:k]
                gt_label = gt_dict[level]
                if gt_label in pred_labels:
                    correct_in_curr_level += 1
            k_micro_acc[k][level] = correct_in_curr_level * 1.0 / total_samples
    return k_micro_acc


def top_k_macro_accuracy(pred_list, gt_list, k_list=None):
    macro_acc_dict, pred_counts, gt_counts = {}, {}, {}
    for k in k_list:
        macro_acc_dict[k], pred_counts[k], gt_counts[k] = {}, {}, {}
        for level in LEVELS:
            pred_counts[k][level] = {}
            gt_counts[k][level] = {}
            for pred, gt in zip(pred_list, gt_list):
                pred_labels = pred[level][:k]
                gt_label = gt[level]
                if gt_label not in pred_counts[k][level].keys():
                    pred_counts[k][level][gt_label] = 0
                if gt_label not in gt_counts[k][level].keys():
                    gt_counts[k][level][gt_label] = 0
                if gt_label in pred_labels:
                    pred_counts[k][level][gt_label] = pred_counts[k][level][gt_label] + 1
                gt_counts[k][level][gt_label] = gt_counts[k][level][gt_label] + 1
    for k in k_list:
        for level in LEVELS:
            sum_in_this_level = 0
            list_of_labels = list(gt_counts[k][level].keys())
            for gt_label in list_of_labels:
                sum_in_this_level = (sum_in_this_level
                                     + pred_counts[k][level][gt_label] * 1.0 / gt_counts[k][level][gt_label])
            macro_acc_dict[k][level] = sum_in_this_level / len(list_of_labels)
    return macro_acc_dict


def inference_and_print_result(keys_dict, seen_dict, unseen_dict, k_list):
    """The accuracy part of the official function (acc_dict only)."""
    acc_dict = {}
    max_k = k_list[-1]
    seen_gt_label = seen_dict["label_list"]
    unseen_gt_label = unseen_dict["label_list"]
    keys_label = keys_dict["label_list"]
    for query_feature_type in All_TYPE_OF_FEATURES_OF_QUERY:
        if query_feature_type not in seen_dict.keys():
            continue
        acc_dict[query_feature_type] = {}
        for key_feature_type in All_TYPE_OF_FEATURES_OF_KEY:
            if key_feature_type not in keys_dict.keys():
                continue
            acc_dict[query_feature_type][key_feature_type] = {}
            curr_seen_feature = seen_dict[query_feature_type]
            curr_unseen_feature = unseen_dict[query_feature_type]
            curr_keys_feature = keys_dict[key_feature_type]
            if curr_keys_feature is None:
                continue
            if key_feature_type == "all_key_features":
                keys_label = keys_dict["all_key_features_label"]  # (never reset: harmless, it repeats label_list)
            if (curr_keys_feature is None or curr_seen_feature is None or curr_unseen_feature is None
                    or curr_keys_feature.shape[-1] != curr_seen_feature.shape[-1]
                    or curr_keys_feature.shape[-1] != curr_unseen_feature.shape[-1]):
                continue
            curr_seen_pred_list = make_prediction(curr_seen_feature, curr_keys_feature, keys_label, max_k=max_k)
            curr_unseen_pred_list = make_prediction(curr_unseen_feature, curr_keys_feature, keys_label, max_k=max_k)
            entry = acc_dict[query_feature_type][key_feature_type]
            entry["seen"] = {"micro_acc": top_k_micro_accuracy(curr_seen_pred_list, seen_gt_label, k_list=k_list),
                             "macro_acc": top_k_macro_accuracy(curr_seen_pred_list, seen_gt_label, k_list=k_list)}
            entry["unseen"] = {"micro_acc": top_k_micro_accuracy(curr_unseen_pred_list, unseen_gt_label, k_list),
                               "macro_acc": top_k_macro_accuracy(curr_unseen_pred_list, unseen_gt_label, k_list)}
    return acc_dict


def compute_overall_acc(acc_dict):
    overall_acc_list = []
    for query_type in acc_dict.keys():
        for key_type in acc_dict[query_type].keys():
            for seen_or_unseen in acc_dict[query_type][key_type].keys():
                for micro_and_macro in acc_dict[query_type][key_type][seen_or_unseen].keys():
                    for k in acc_dict[query_type][key_type][seen_or_unseen][micro_and_macro].keys():
                        if k == 3 or k == 5:
                            continue
                        for level in acc_dict[query_type][key_type][seen_or_unseen][micro_and_macro][k].keys():
                            curr_acc = acc_dict[query_type][key_type][seen_or_unseen][micro_and_macro][k][level]
                            overall_acc_list.append(curr_acc)
    return sum(overall_acc_list) / len(overall_acc_list)


def official_dicts(emb: EmbeddingSet, stage: str = "test") -> dict[str, dict]:
    """The split dicts ``get_features_and_label`` builds, from an EmbeddingSet (float64, as the official arrays)."""
    meta = emb.metadata
    masks = {"seen": meta["split"] == f"{stage}_seen", "unseen": meta["split"] == f"{stage}_unseen",
             "key": meta["split"].isin(["seen_keys", f"{stage}_unseen_keys"])}
    out = {}
    for group, mask in masks.items():
        rows = np.flatnonzero(mask.to_numpy())
        feats = {name: emb.vectors[m][rows].astype(np.float64) if m in emb.vectors else None
                 for name, m in [("encoded_image_feature", "image"), ("encoded_dna_feature", "dna"),
                                 ("encoded_language_feature", "text")]}
        image, dna, text = (feats[n] for n in All_TYPE_OF_FEATURES_OF_QUERY[:3])
        if image is not None and dna is not None:
            feats["averaged_feature"] = np.mean([image, dna], axis=0)
            feats["concatenated_feature"] = np.concatenate((image, dna), axis=1)
        labels = [{level: meta[level].iloc[r] for level in LEVELS} for r in rows]
        d = {**feats, "label_list": labels}
        if group == "key" and image is not None and dna is not None and text is not None:
            d["all_key_features"] = np.concatenate((image, dna, text), axis=0)
            d["all_key_features_label"] = labels + labels + labels
        out[group] = d
    return out


def assert_same_as_official(result, acc_dict, ks):
    rows = result.rows.set_index(["query", "key", "split", "rank", "k"])
    computed = [(q, k) for q in acc_dict for k in acc_dict[q] if acc_dict[q][k]]
    assert list(dict.fromkeys(zip(result.rows["query"], result.rows["key"]))) == [
        (TOOLKIT_NAME[q], TOOLKIT_NAME[k]) for q, k in computed]
    n_checked = 0
    for q, k in computed:
        for split in ("seen", "unseen"):
            for metric, column in (("micro_acc", "micro"), ("macro_acc", "macro")):
                for top in ks:
                    for level in LEVELS:
                        got = rows.loc[(TOOLKIT_NAME[q], TOOLKIT_NAME[k], split, level, top), column]
                        assert got == pytest.approx(acc_dict[q][k][split][metric][top][level], abs=1e-12), \
                            (q, k, split, metric, top, level)
                        n_checked += 1
    return n_checked


# --- fixture: 4 seen + 4 unseen species, clustered random vectors --------------------------------------------------

def random_set(seed: int = 0, modalities=("image", "dna", "text"), dim: int = 12) -> EmbeddingSet:
    rng = np.random.default_rng(seed)
    centroids = rng.normal(size=(8, dim))
    plan = [("seen_keys", range(4), 30), ("test_unseen_keys", range(4, 8), 26), ("test_seen", range(4), 20),
            ("test_unseen", range(4, 8), 18), ("train", range(4), 5)]
    rows, species = [], []
    for split, pool, n in plan:
        for i in range(n):
            s = list(pool)[int(rng.integers(len(pool)))]
            genus = s % 4  # unseen species share genera, families and orders with seen ones
            family = min(genus, 2)
            rows.append({"record_id": f"{split}-{i}", "order": f"O{family // 2}", "family": f"F{family}",
                         "genus": f"G{genus}", "species": f"S{s}", "bin_uri": pd.NA, "split": split})
            species.append(s)
    vectors = {}
    for m in modalities:
        raw = centroids[species] + rng.normal(size=(len(rows), dim))
        vectors[m] = (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float32)
    return EmbeddingSet(pd.DataFrame(rows), vectors)


@pytest.mark.parametrize("modalities, n_pairs", [(("image", "dna", "text"), 21), (("image", "dna"), 10),
                                                 (("dna", "text"), 4)])
def test_official_pairs_equal_the_official_code(modalities, n_pairs):
    emb = random_set(modalities=modalities)
    ks = (1, 3, 5)
    result = evaluate_embeddings(emb, EvalConfig(pairs="official", ks=ks))
    d = official_dicts(emb)
    acc_dict = inference_and_print_result(d["key"], d["seen"], d["unseen"], list(ks))
    assert len(set(zip(result.rows["query"], result.rows["key"]))) == n_pairs
    assert assert_same_as_official(result, acc_dict, ks) == n_pairs * 2 * 2 * 3 * 4
    # CLIBD's checkpoint selection (train_cl.py) is the mean top-1 over its pairs
    assert mean_top1(result) == pytest.approx(compute_overall_acc(acc_dict), abs=1e-12)
    # the results are not trivial: some hits, some misses
    top1 = result.rows[(result.rows["k"] == 1) & (result.rows["rank"] == "species")]["micro"]
    assert 0 < top1.min() < top1.max() <= 1 and top1.min() < 1


def test_read_release_then_evaluate_equals_official_main_on_the_same_files(tmp_path):
    from test_released_embeddings import make_release

    path, dicts = make_release(tmp_path / "image_dna_text", sizes=(14, 12, 30))
    emb = read_released_embeddings(path)
    result = evaluate_embeddings(emb, EvalConfig(pairs="official", ks=(1, 3)))
    # the official main() loading branch: the file's datasets, label_list, all_key_features_label = key labels x 3
    import h5py

    loaded = {}
    with h5py.File(path) as f:
        for group in ("seen", "unseen", "key"):
            loaded[group] = {t: f[group][t][:] for t in All_TYPE_OF_FEATURES_OF_KEY if t in f[group].keys()}
            loaded[group]["label_list"] = dicts[group]["label_list"]
    loaded["key"]["all_key_features_label"] = dicts["key"]["label_list"] * 3
    acc_dict = inference_and_print_result(loaded["key"], loaded["seen"], loaded["unseen"], [1, 3])
    assert assert_same_as_official(result, acc_dict, (1, 3)) == 21 * 2 * 2 * 2 * 4


def test_default_pairs_are_todays_pairs_unchanged():
    emb = random_set(seed=3)
    default = evaluate_embeddings(emb, EvalConfig())
    explicit = evaluate_embeddings(emb, EvalConfig(pairs=TODAYS_PAIRS))
    assert list(dict.fromkeys(zip(default.rows["query"], default.rows["key"]))) == [
        tuple(p.split("->")) for p in TODAYS_PAIRS]
    pd.testing.assert_frame_equal(default.rows, explicit.rows)
    pd.testing.assert_frame_equal(default.per_taxon, explicit.per_taxon)
    pd.testing.assert_frame_equal(default.coverage, explicit.coverage)


def test_fused_features_need_image_and_dna_and_stacked_keys_count_vectors():
    emb = random_set(seed=5)
    split = emb.metadata["split"]
    no_image = np.flatnonzero(split == "test_seen")[:3]
    no_text = np.flatnonzero(split == "seen_keys")[:4]
    emb.vectors["image"][no_image] = np.nan
    emb.vectors["text"][no_text] = np.nan
    result = evaluate_embeddings(emb, EvalConfig(pairs=("image+dna->all", "concat->concat", "text->image+dna"),
                                                 ks=(1,)))
    cov = result.coverage.set_index(["query", "key", "split"])
    assert cov.loc[("image+dna", "all", "seen"), "n_queries_used"] == 20 - 3
    assert cov.loc[("image+dna", "all", "seen"), "n_keys"] == 56
    assert cov.loc[("image+dna", "all", "seen"), "n_keys_used"] == 56 * 3 - 4  # image + dna + text key vectors
    assert cov.loc[("text", "image+dna", "seen"), "n_queries_used"] == 20
    # the same numbers as the official code run on the records that have the features
    keep = np.ones(len(emb), dtype=bool)
    keep[no_image] = False
    with_image = emb.subset(keep)
    d = official_dicts(with_image)
    text_ok = with_image.has("text")[with_image.metadata["split"].isin(["seen_keys", "test_unseen_keys"])]
    labels = d["key"]["label_list"]
    d["key"]["all_key_features"] = np.concatenate((d["key"]["encoded_image_feature"], d["key"]["encoded_dna_feature"],
                                                   d["key"]["encoded_language_feature"][text_ok]))
    d["key"]["all_key_features_label"] = labels + labels + [lab for lab, ok in zip(labels, text_ok) if ok]
    del d["key"]["encoded_language_feature"]  # it holds the NaN rows; the stacked set above left them out
    acc = inference_and_print_result(d["key"], d["seen"], d["unseen"], [1])
    got = result.rows.set_index(["query", "key", "split", "rank", "k"])
    for split in ("seen", "unseen"):
        for level in LEVELS:
            ref = acc["averaged_feature"]["all_key_features"][split]
            assert got.loc[("image+dna", "all", split, level, 1), "micro"] == pytest.approx(ref["micro_acc"][1][level])
            assert got.loc[("image+dna", "all", split, level, 1), "macro"] == pytest.approx(ref["macro_acc"][1][level])


def test_pair_names_and_errors():
    assert EvalConfig.from_dict(EvalConfig(pairs="official").to_dict()).pairs == "official"
    with pytest.raises(ConfigError, match="'all', 'official' or a list"):
        EvalConfig(pairs="everything")
    with pytest.raises(ConfigError, match=r"KEY in \['image', 'dna', 'text', 'image\+dna', 'concat', 'all'\]"):
        EvalConfig(pairs=("all->dna",))  # the stacked key set is not a query
    emb = random_set(seed=1)
    with pytest.raises(ConfigError, match=r"image->concat, but image vectors have dimension 12 and concat vectors 24"):
        evaluate_embeddings(emb, EvalConfig(pairs=("image->concat",)))
    with pytest.raises(ConfigError, match=r"asks for modalities \['text'\]"):
        evaluate_embeddings(random_set(modalities=("image", "dna")), EvalConfig(pairs=("dna->all",)))
    pairs = EvalConfig(pairs="official").modality_pairs(("image", "dna", "text"))
    assert ("concat", "concat") in pairs and ("concat", "all") not in pairs and ("image", "concat") not in pairs


def test_clibd_evaluate_a_released_file_with_the_official_pairs(tmp_path, capsys):
    """`clibd evaluate --embeddings extracted_feature_from_test_split.hdf5 --pairs official` needs no model or data
    and writes the same numbers as the library call."""
    import json

    from clibd_toolkit import cli
    from test_released_embeddings import make_release

    path, _ = make_release(tmp_path / "image_dna_text", sizes=(14, 12, 30))
    out = tmp_path / "eval"
    assert cli.main(["evaluate", "--embeddings", str(path), "--pairs", "official", "--ks", "1", "--out", str(out),
                     "--no-progress"]) == 0
    rows = pd.DataFrame(json.loads((out / "metrics.json").read_text())["rows"])
    want = evaluate_embeddings(read_released_embeddings(path), EvalConfig(pairs="official", ks=(1,))).rows
    assert len(rows) == len(want) and {"text", "image+dna", "concat"} <= set(rows["query"])
    merged = rows.merge(want, on=["query", "key", "split", "rank", "k"], suffixes=("", "_lib"))
    assert len(merged) == len(want)
    assert np.allclose(merged["micro"].astype(float), merged["micro_lib"], equal_nan=True)
    assert cli.main(["evaluate", "--embeddings", str(path), "--run", "r", "--out", str(out)]) == 2
    assert "leave out --data, --run and --model" in capsys.readouterr().err
