"""The package imports in a fresh interpreter without the optional drivers it does not need."""

from __future__ import annotations

import subprocess
import sys


def test_the_codec_and_the_store_port_import_without_redis() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import freshkeep, freshkeep.core.codec, freshkeep.stores.base\n"
        "assert 'freshkeep.stores.redis' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
