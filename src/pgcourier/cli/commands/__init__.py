"""The commands, one module per resource; each function is one subcommand's work."""
