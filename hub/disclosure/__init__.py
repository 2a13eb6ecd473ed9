"""Disclosure control: the one layer every aggregate output goes through (issue 16).

* ``calendar``: hour ⊂ day ⊂ ISO week ⊂ month in the city's time zone;
* ``tree``: primary and secondary suppression on one series' calendar tree (pure);
* ``tables``: the adapter routes call, returning :class:`ProtectedTable`;
* ``floor``: per-window device counts and roll-ups (the floor under k), and the hub's
  minimum device k.

What each output may reveal, and why, is in ``docs/privacy.md``.
"""

__all__: list[str] = []
