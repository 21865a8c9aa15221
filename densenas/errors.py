"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class DensenasError(ValueError):
    """An input problem the user can fix: the message names the file, key or value."""
