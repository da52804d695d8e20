"""One module per stormctl subcommand; each has register(subparsers)."""
