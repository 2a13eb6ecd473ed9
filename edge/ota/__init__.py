"""The device side of OTA: the folder's layout (:mod:`.slots`), the A/B updater (:mod:`.updater`),
its resumable downloads (:mod:`.fetcher`), what a campaign command does (:mod:`.commands`, run
by the agent on its own connection) and the stand-alone listener (:mod:`.listener`).

Nothing is imported here: the agent reads the live slot through :mod:`.slots` without loading
the TUF client the updater needs.
"""

__all__: list[str] = []
