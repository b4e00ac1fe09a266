"""What the CLI's commands share beyond their parser (gateway/cli.py): reaching the store,
showing progress on a terminal, printing results."""
