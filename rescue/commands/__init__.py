"""CLI subcommands, one module each.

Each module has `add_parser(subparsers)` to register itself and `run(args)` returning an exit
code; rescue/cli.py only dispatches.
"""
