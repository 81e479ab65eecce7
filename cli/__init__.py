"""The non-task subcommands of run.py: download, generate."""
