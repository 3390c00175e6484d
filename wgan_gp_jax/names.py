"""Messages for names looked up in the package's registries (objectives, optimizers, models, augmentations)."""

import difflib
from typing import Iterable


def unknown_name_message(kind: str, name: object, valid: Iterable[str]) -> str:
  """``unknown <kind> 'x'; did you mean 'y'? (valid: ...)``."""
  valid = list(valid)
  close = difflib.get_close_matches(str(name), valid, n=1)
  hint = f"; did you mean {close[0]!r}?" if close else ""
  return f"unknown {kind} {name!r}{hint} (valid: {', '.join(valid)})"
