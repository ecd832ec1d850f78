"""environment.yml follows today's conda practice (issue 15.6): conda-forge only (the `pytorch` channel stopped
publishing after torch 2.5), conda-forge's `pytorch` with its CPU variant (`pytorch-cpu`) by default and one marked line for CUDA
(`pytorch-gpu`),
torchvision and timm from conda-forge, and every package it names is one the toolkit uses. No conda solve here: the
file's syntax and its names are checked against pyproject.toml and the code."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML (installed with papermill) reads environment.yml")

ROOT = Path(__file__).resolve().parents[1]
#: conda-forge names that differ from the PyPI distribution name
CONDA_TO_PIP = {"pytorch": "torch", "pytorch-cpu": "torch"}
#: packages named in environment.yml that pyproject.toml does not list, and where the toolkit uses them
INDIRECT = {"torchvision": "bioscan-dataset", "timm": "tests/official_stack"}


def _env() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def _name(spec: str) -> str:
    return re.split(r"[\s=<>!\[]", spec.strip(), maxsplit=1)[0].lower()


def _pyproject_requirements() -> dict[str, set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"core": project["dependencies"], **project["optional-dependencies"]}
    return {group: {_name(r) for r in reqs if not r.startswith("clibd-toolkit")} for group, reqs in groups.items()}


def test_conda_forge_only_with_a_cpu_pytorch_and_one_cuda_line():
    env = _env()
    assert env["channels"] == ["conda-forge"]
    specs = [d for d in env["dependencies"] if isinstance(d, str)]
    names = [_name(s) for s in specs]
    assert names.count("pytorch") == 1 and names.count("pytorch-cpu") == 1 and "pytorch-gpu" not in names
    assert not {"cpuonly", "pytorch-cuda", "cudatoolkit", "pytorch-mutex"} & set(names)  # the old channel's idiom
    text = (ROOT / "environment.yml").read_text()
    marked = [line for line in text.splitlines() if "one line to change for CUDA" in line]
    assert len(marked) == 1 and marked[0].split("#")[0].strip() == "- pytorch-cpu" and "pytorch-gpu" in marked[0]
    assert {"torchvision", "timm"} <= {_name(s) for s in specs}
    pip = [d for d in env["dependencies"] if isinstance(d, dict)]
    assert len(pip) == 1 and any(re.fullmatch(r"-e \.\[.*\ball\b.*\]", p) for p in pip[0]["pip"])


def test_every_package_it_names_is_used_and_the_core_dependencies_come_from_conda_forge():
    requirements = _pyproject_requirements()
    listed = set().union(*requirements.values())
    named = {CONDA_TO_PIP.get(_name(s), _name(s)) for s in _env()["dependencies"] if isinstance(s, str)}
    named -= {"python", "pip"}
    for package in sorted(named - listed):
        assert package in INDIRECT, f"environment.yml names {package}, which the toolkit does not use"
    # the indirect ones are used where the table says
    bioscan = " ".join(requirements["bioscan"])
    assert "bioscan-dataset" in bioscan
    assert any(re.search(r"^\s*(import timm|from timm)", p.read_text(), re.M)
               for p in (ROOT / "tests" / "official_stack").glob("*.py"))
    # every core dependency (and torch) is a conda-forge package here, so pip only adds the PyPI-only ones
    assert requirements["core"] <= named
