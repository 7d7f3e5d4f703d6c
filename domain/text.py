"""Text that PostgreSQL can store and JSON can carry: no NUL character, no unpaired surrogate."""

from __future__ import annotations

import re
from typing import Final

# U+0000 is refused by PostgreSQL's text types; a lone UTF-16 surrogate cannot be encoded as UTF-8.
_UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")

UNSTORABLE_TEXT_MESSAGE: Final = (
    "contains a NUL character (\\u0000) or an unpaired surrogate, which text cannot hold"
)


def is_storable_text(value: str) -> bool:
    return _UNSTORABLE.search(value) is None
