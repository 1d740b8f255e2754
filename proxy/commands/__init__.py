"""The commands an administrator runs: serve, the account commands, account check."""

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
