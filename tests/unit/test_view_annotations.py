"""``Keeper.view(build, sources=...)`` takes what a ``Section`` takes: source names,
partitioned sources (``table_source(Order, by="customer_id")``) or a callable of the key. Its
annotation says so, so a strictly typed application can pass ``sources=[ORDERS]``."""

from __future__ import annotations

from typing import get_type_hints

from freshkeep import Keeper
from freshkeep.views import Section


def test_keeper_view_is_annotated_to_take_the_sources_a_section_takes() -> None:
    view = get_type_hints(Keeper.view)["sources"]
    section = get_type_hints(Section.__init__)["sources"]
    assert view == section
