"""Registry: register/get/list/help/build, lazy sources, close-match errors, the catalogue."""

from __future__ import annotations

import pytest

from trainforge.errors import ConfigError, RegistryError
from trainforge.registry import CATALOGUE, Registry, check_params, list_registries, registry


def test_register_get_list_help():
    reg = Registry("heads")

    @reg.register(help="a linear classifier")
    class Linear:
        pass

    reg.register(dict, name="Plain")
    assert reg.get("Linear") is Linear
    assert reg.list() == ["Linear", "Plain"]
    assert reg.list("lin*") == ["Linear"]
    assert reg.help("Linear") == "a linear classifier"
    assert "Linear" in reg and "linear" not in reg and 3 not in reg


def test_second_registration_is_an_error():
    reg = Registry("necks")
    reg.register(dict, name="FPN")
    with pytest.raises(ConfigError, match="already has 'FPN'"):
        reg.register(list, name="FPN")


def test_unknown_name_suggests_close_matches_and_folds_case():
    reg = Registry("backbones")
    reg.register(dict, name="resnet18")
    with pytest.raises(RegistryError, match="did you mean 'resnet18'"):
        reg.get("resnet_18")
    with pytest.raises(RegistryError, match="did you mean 'resnet18'"):
        reg.get("RESNET18")
    with pytest.raises(RegistryError, match="a name must be a string"):
        reg.get(["resnet18"])


def test_lazy_source_is_not_called_until_used():
    calls = []

    def names():
        calls.append("names")
        return ["mobilenet", "vit"]

    def get(name):
        calls.append(name)
        if name not in ("mobilenet", "vit"):
            raise KeyError(name)
        return name.upper()

    reg = Registry("backbones")
    reg.add_source(names, get, help=lambda n: f"timm {n}")
    assert calls == []
    assert reg.get("vit") == "VIT"
    assert reg.help("mobilenet") == "timm mobilenet"
    assert reg.list("m*") == ["mobilenet"]
    with pytest.raises(RegistryError, match="did you mean 'vit'"):
        reg.get("vitt")


def test_build_checks_parameters_against_the_signature():
    reg = Registry("callbacks")

    def freeze_unfreeze(epochs: int = 1, stages: int = 1):
        return (epochs, stages)

    reg.register(freeze_unfreeze, name="FreezeUnfreeze")
    assert reg.build("FreezeUnfreeze", "callbacks[0].params", stages=2) == (1, 2)
    with pytest.raises(ConfigError, match=r"callbacks\[0\].params has no key 'stage'; did you mean 'stages'"):
        reg.build("FreezeUnfreeze", "callbacks[0].params", stage=1)


def test_check_params_accepts_var_keyword():
    check_params(lambda **kw: None, {"anything": 1}, "x")


def test_catalogue_names_and_unknown_registry():
    assert list_registries() == list(CATALOGUE)
    assert registry("tasks").kind == "tasks"
    with pytest.raises(RegistryError, match="did you mean 'necks'"):
        registry("neck")
