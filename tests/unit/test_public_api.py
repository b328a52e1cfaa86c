"""The public namespace is exactly ``__all__``, sorted; exceptions share one root."""

from __future__ import annotations

import types

import freshkeep
from freshkeep import exceptions


def test_all_matches_public_names() -> None:
    public = {
        name
        for name, value in vars(freshkeep).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    public.discard("annotations")  # from __future__
    assert sorted(freshkeep.__all__) == freshkeep.__all__
    assert set(freshkeep.__all__) == public


def test_every_error_derives_from_the_root_and_has_a_default_message() -> None:
    for name in dir(exceptions):
        obj = getattr(exceptions, name)
        ours = isinstance(obj, type) and obj.__module__ == exceptions.__name__
        if ours and issubclass(obj, Exception):
            assert issubclass(obj, freshkeep.FreshkeepError)
            assert str(obj()) == (obj.__doc__ or "").strip() != ""
