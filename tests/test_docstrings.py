"""Every public name has a docstring with a runnable example (STYLE.md rule 13).

This test checks that each class and function in the ``__all__`` of the public modules has a docstring with a
``>>>`` example; ``make doctest`` (``pytest --doctest-modules mulan_ppl``, in ``.ci/run``) runs those examples.
"""

import importlib
import inspect
import types

import pytest

PUBLIC_MODULES = (
    "mulan_ppl",
    "mulan_ppl.core",
    "mulan_ppl.schedules",
    "mulan_ppl.distrax",
    "mulan_ppl.numpyro",
    "mulan_ppl.hvae",
    "mulan_ppl.likelihood",
    "mulan_ppl.sampling",
    "mulan_ppl.train",
    "mulan_ppl.nets",
    "mulan_ppl.models",
)


def documentable(obj) -> bool:
    """Classes and callables carry docstrings; modules are listed in ``__all__`` of the package, and constants
    (tuples of option names, version strings) cannot carry their own."""
    return not isinstance(obj, types.ModuleType) and (inspect.isclass(obj) or callable(obj))


def missing_examples(module) -> list[str]:
    """Names in ``module.__all__`` whose own docstring has no ``>>>`` example."""
    missing = []
    for name in module.__all__:
        obj = getattr(module, name)
        if documentable(obj) and ">>>" not in (obj.__doc__ or ""):
            missing.append(name)
    return missing


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_has_a_docstring_example(module_name):
    module = importlib.import_module(module_name)
    assert module.__all__, f"{module_name} has an empty __all__"
    assert missing_examples(module) == [], f"{module_name}: names without a `>>>` example in their docstring"


def test_the_check_sees_a_missing_example():
    """Control: a module with one documented and one undocumented function, and a constant."""

    def documented():
        """Does nothing.

        Example:
            >>> documented()
        """

    def undocumented():
        """Does nothing, with no example."""

    fake = types.ModuleType("fake")
    fake.__all__ = ["CONSTANT", "documented", "undocumented"]
    fake.CONSTANT, fake.documented, fake.undocumented = ("a", "b"), documented, undocumented
    assert missing_examples(fake) == ["undocumented"]
