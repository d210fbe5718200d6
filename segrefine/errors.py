"""The one exception type for user mistakes."""


class SegrefineError(Exception):
    """A user mistake (bad option, bad file): the CLI prints it as one line on stderr and exits with code 2."""
