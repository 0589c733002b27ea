"""One module per `harness` subcommand, each exposing `command`."""
