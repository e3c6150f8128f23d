"""Command-line interface: argparse subcommands that parse, call the library and print."""
