"""CLI commands, one module per feature; each registers on `normlab.cli.app`."""
