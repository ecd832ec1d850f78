"""The public API: every exported name resolves to what its defining module holds, is documented, and importing
the package stays cheap (torch loads on first use, not at import)."""
from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

import clibd_toolkit as ctk
from clibd_toolkit import viz

PUBLIC = [n for n in ctk.__all__ if n != "__version__"]


@pytest.mark.parametrize("name", PUBLIC)
def test_exported_name_resolves_to_its_module(name):
    module = importlib.import_module(f"clibd_toolkit.{ctk._EXPORTS[name]}")
    assert getattr(ctk, name) is getattr(module, name)


@pytest.mark.parametrize("name", PUBLIC)
def test_exported_callables_are_documented(name):
    value = getattr(ctk, name)
    if inspect.isclass(value) or inspect.isfunction(value):
        assert inspect.getdoc(value), f"clibd_toolkit.{name} has no docstring"


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        ctk.not_a_name  # noqa: B018


def test_dir_lists_the_public_names():
    assert set(PUBLIC) <= set(dir(ctk))


@pytest.mark.parametrize("name", [n for n in viz.__all__ if not n.isupper()])
def test_viz_names_are_documented(name):
    assert inspect.getdoc(getattr(viz, name)), f"clibd_toolkit.viz.{name} has no docstring"


def test_import_does_not_load_torch():
    code = "import sys, clibd_toolkit; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
