"""trashmap: the `trashmap` command that fronts the web app, the workers and ml/."""
