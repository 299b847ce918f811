"""Every package's __all__ is honest: it names what exists, and what is public is in it."""

import importlib
import types

import pytest

PACKAGES = ["z8", "z8.journal", "z8.testing", "z8.errors", "z8.ids", "z8.actors", "z8.supervision", "z8.app", "z8.audit", "z8.effects", "z8.policies", "z8.ai"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist_and_public_names_are_listed(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    assert len(exported) == len(module.__all__), "duplicates in __all__"
    assert all(hasattr(module, item) for item in exported)
    public = {
        key for key, value in vars(module).items()
        if not key.startswith("_") and not isinstance(value, types.ModuleType)
        and getattr(value, "__module__", name).startswith("z8")
    }
    assert public - exported == set() or name == "z8", public - exported


@pytest.mark.parametrize("name", PACKAGES)
def test_public_api_has_docstrings(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__
    for item in module.__all__:
        value = getattr(module, item)
        if callable(value) and getattr(value, "__module__", "").startswith("z8"):
            assert value.__doc__, f"{name}.{item} has no docstring"


def test_every_error_derives_from_z8error() -> None:
    from z8 import errors

    for item in errors.__all__:
        assert issubclass(getattr(errors, item), errors.Z8Error)
