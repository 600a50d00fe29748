"""The command line: argv to verbs, errors to exit codes."""
