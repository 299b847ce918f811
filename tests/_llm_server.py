"""The local OpenAI/Anthropic-compatible server for tests: ``examples/_llm_server.py``.

The server lives with the examples (the demo's AI fleet and ``benchmarks/ai.py`` use it
too); there is one copy. Importing ``_llm_server`` from ``tests/`` loads that file as the
module ``_llm_server``, so ``from _llm_server import LLMServer, ...`` works as before, and
``python3 tests/_llm_server.py --port 0`` still runs it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "examples" / "_llm_server.py"
_spec = importlib.util.spec_from_file_location(__name__, _PATH)
assert _spec is not None and _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
sys.modules[__name__] = _module  # `import _llm_server` hands back the module in sys.modules: the server's
_spec.loader.exec_module(_module)
