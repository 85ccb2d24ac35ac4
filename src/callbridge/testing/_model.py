"""Where the local realtime model used to live; it is `callbridge.local` now.

Kept only so `from callbridge.testing._model import ...` in tests/test_call.py
still works while that file is being edited elsewhere. Delete this module once
it imports from `callbridge.local` (or `callbridge.testing`) instead.
"""

from __future__ import annotations

from ..local import LocalRealtimeServer, ServerSession

__all__ = ["LocalRealtimeServer", "ServerSession"]
