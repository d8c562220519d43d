"""trashmap core: settings, database, schema, photo storage, the task contract, imaging.

Neither Flask nor torch: `web`, `worker` and `ml` all build on it. The `trashmap` command
lives in `trashmap.cli`, the one module here allowed to import them.
"""
