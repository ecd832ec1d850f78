"""Configs: unknown keys, wrong types and out-of-range values are errors that name the field, the value and
what is allowed; configs round-trip through JSON; checkpoints and presets that do not match are refused."""
from __future__ import annotations

import json

import pytest

import clibd_toolkit as ctk
from clibd_toolkit.config import AdapterConfig, EncoderConfig, ModelConfig, TrainConfig, parse_modalities
from clibd_toolkit.errors import CheckpointError, ConfigError


@pytest.mark.parametrize("cls, data, match", [
    (TrainConfig, {"learning_rate": 1e-3}, "unknown TrainConfig key 'learning_rate'"),
    (TrainConfig, {"epoch": 3}, "did you mean 'epochs'"),
    (ModelConfig, {"embed_dimm": 3}, "did you mean 'embed_dim'"),
    (AdapterConfig, {"rank": 4}, "unknown AdapterConfig key 'rank'"),
])
def test_unknown_keys_are_errors_with_suggestions(cls, data, match):
    with pytest.raises(ConfigError, match=match):
        cls.from_dict(data)


@pytest.mark.parametrize("kwargs, match", [
    ({"lr": -1.0}, r"`TrainConfig.lr` got -1.0; expected a number > 0"),
    ({"lr": "fast"}, r"`TrainConfig.lr` got 'fast' of type str; expected a number"),
    ({"epochs": "3"}, r"`TrainConfig.epochs` got '3' of type str; expected an integer"),
    ({"epochs": 0}, r"`TrainConfig.epochs` got 0; expected an integer >= 1"),
    ({"epochs": True}, r"expected an integer"),
    ({"batch_size": 1}, r"contrastive batch needs negatives"),
    ({"precision": "fp16"}, r"expected one of \['auto', 'fp32', 'bf16'\]"),
    ({"device": "gpu"}, r"auto, cpu, cuda, cuda:N or mps"),
    ({"lr": float("nan")}, r"finite"),
])
def test_train_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kwargs)


def test_lora_rank_zero_and_other_ranges():
    with pytest.raises(ConfigError, match=r"`AdapterConfig.r` got 0; expected an integer >= 1"):
        AdapterConfig(r=0)
    with pytest.raises(ConfigError, match="dropout"):
        AdapterConfig(dropout=1.5)
    with pytest.raises(ConfigError, match="mode"):
        AdapterConfig(mode="qlora")


def test_empty_and_unknown_modality_sets():
    with pytest.raises(ConfigError, match="empty modality set"):
        parse_modalities("")
    with pytest.raises(ConfigError, match="unknown modality 'audio'"):
        parse_modalities("dna,audio")
    with pytest.raises(ConfigError, match="at least one of"):
        ModelConfig()
    assert parse_modalities("text, dna") == ("dna", "text")
    with pytest.raises(ConfigError, match=r"modalities \['image'\] are not in this model"):
        ctk.get_preset("tiny").with_modalities("dna,text").with_modalities("image,dna")


def test_round_trip_through_json(tmp_path):
    cfg = ctk.get_preset("cpu").with_adapter(AdapterConfig(mode="lora", r=8, alpha=16.0, target_modules=("query",)),
                                             ["text"])
    cfg.save(tmp_path / "model.json")
    data = json.loads((tmp_path / "model.json").read_text())
    assert data["config_kind"] == "model" and data["clibd_toolkit_version"] == ctk.__version__
    assert ModelConfig.load(tmp_path / "model.json") == cfg
    with pytest.raises(ConfigError, match="holds a 'model' config, not a 'train' config"):
        TrainConfig.load(tmp_path / "model.json")


def test_nested_configs_are_checked():
    with pytest.raises(ConfigError, match=r"`AdapterConfig.r`"):
        ModelConfig.from_dict({"dna": {"arch": "bert_kmer", "adapter": {"r": -2}}})
    with pytest.raises(ConfigError, match="unknown EncoderConfig key 'layers'"):
        ModelConfig.from_dict({"dna": {"arch": "bert_kmer", "layers": 2}})


def test_unknown_architecture_is_named():
    cfg = ModelConfig(dna=EncoderConfig(arch="barcodebert"), text=EncoderConfig(arch="tiny_text"))
    with pytest.raises(ConfigError, match="unknown dna encoder architecture 'barcodebert'"):
        ctk.create_model(cfg)


def test_preset_and_checkpoint_that_do_not_match(tmp_path):
    import pandas as pd

    records = ctk.normalise_records(pd.DataFrame({"record_id": [f"r{i}" for i in range(6)],
                                                  "dna_barcode": ["ACGTTGCAAC" * 20] * 6, "order": ["A", "B"] * 3}))
    ctk.train(records, ctk.get_preset("tiny").with_modalities("dna,text"),
              TrainConfig(all_records=True, epochs=1, batch_size=3, progress=False), tmp_path / "run")
    with pytest.raises(CheckpointError, match="trained with preset 'tiny', not 'cpu'"):
        ctk.load_run(tmp_path / "run", preset="cpu")
    # weights of one architecture never load silently into another
    from clibd_toolkit.checkpoint import checkpoint_folder, load_model_state
    from clibd_toolkit.model import CLIBDModel

    other = CLIBDModel(ctk.get_preset("tiny").with_modalities("dna,text").replace(embed_dim=16))
    with pytest.raises(CheckpointError, match="does not match this model"):
        load_model_state(checkpoint_folder(tmp_path / "run"), other)
