"""Messages for names looked up in the package's registries (objectives, optimizers, models, augmentations) and
for config keys."""

import difflib
from typing import Iterable


def unknown_name_message(kind: str, name: object, valid: Iterable[str], *, list_valid: bool = True) -> str:
  """``unknown <kind> 'x'; did you mean 'y'? (valid: ...)``.

  The suggestion is the valid name nearest to ``name``, or, for dotted names (config keys) where none is near, the
  one whose last part is nearest to ``name``'s last part (``learning_rate`` suggests ``critic.learning_rate``).
  ``list_valid=False`` leaves out the list of valid names (for long lists such as every config key).
  """
  valid = list(valid)
  close = difflib.get_close_matches(str(name), valid, n=1)
  if not close:
    by_last_part = {key.rsplit(".", 1)[-1]: key for key in valid}
    close = [by_last_part[part]
             for part in difflib.get_close_matches(str(name).rsplit(".", 1)[-1], list(by_last_part), n=1)]
  hint = f"; did you mean {close[0]!r}?" if close else ""
  listing = f" (valid: {', '.join(valid)})" if list_valid else ""
  return f"unknown {kind} {name!r}{hint}{listing}"
