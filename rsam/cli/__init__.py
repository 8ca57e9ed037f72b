"""Command-line interface. Each ``cmd_<name>.py`` module here is one ``rsam <name>`` subcommand."""
