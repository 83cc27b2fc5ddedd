"""trainables/protocol.py: the abilities it declares and how supports() asks for them.

The families' abilities are checked in test_families.py, over the registry."""

from __future__ import annotations

import pytest
import torch

from trainables.protocol import ABILITIES, ATTRIBUTE_ABILITIES, METHOD_ABILITIES, supports


def test_the_declared_abilities():
    assert METHOD_ABILITIES == {"encode", "decode", "reconstruction_nll", "generate", "sample", "reconstruct",
                                "predict", "training_step", "configure_optimizers", "validation_metrics",
                                "config_metrics", "check_setup"}
    assert ATTRIBUTE_ABILITIES == {"latent_dim", "num_classes", "memory_format"}
    assert ABILITIES == METHOD_ABILITIES | ATTRIBUTE_ABILITIES


class _Declared(torch.nn.Module):
    num_classes: int  # declared by annotation, set in __init__ only when asked

    def __init__(self, classes: int | None = None):
        super().__init__()
        if classes is not None:
            self.num_classes = classes

    def encode(self, x):
        return x, x


class _Child(_Declared):
    latent_dim = 3  # a class attribute declares it too
    decode = None  # a name that is not callable is no method ability


def test_an_attribute_ability_of_a_class_is_its_declaration_or_a_base_classes():
    assert supports(_Declared, "num_classes") and supports(_Child, "num_classes")
    assert not supports(_Declared, "latent_dim") and supports(_Child, "latent_dim")


def test_an_attribute_ability_of_an_instance_is_the_attribute_it_holds():
    assert supports(_Declared(2), "num_classes") and not supports(_Declared(), "num_classes")
    assert supports(_Child(), "latent_dim")


def test_a_method_ability_must_be_callable():
    assert supports(_Declared, "encode") and supports(_Child(), "encode")
    assert not supports(_Child, "decode") and not supports(_Child(), "decode")


@pytest.mark.parametrize("target", [_Declared, _Declared(2)])
def test_an_unknown_ability_is_a_key_error_naming_it(target):
    with pytest.raises(KeyError, match="num_class'.*expected one of"):
        supports(target, "num_class")
