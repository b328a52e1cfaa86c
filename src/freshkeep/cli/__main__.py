"""``python -m freshkeep.cli``: the ``freshkeep`` command."""

from __future__ import annotations

from freshkeep.cli import main

main()
