"""The `tim` subcommands, outside the library: one module each, and `tim_core.cli` imports only the one that runs.

A command module defines `add_arguments(parser)`, `run(args) -> int` and `ERRORS`, the exception types that
`common.run_command` reports as one line with exit status 2; optionally `DESCRIPTION` (its --help text) and
`TAKES_OVERRIDES` (config fields given as --field value arrive in `args.overrides`). `args.command_line` is the
command as typed (`tim ...`), which trainers record in the model card.
"""
