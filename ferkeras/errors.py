"""The one exception type that the CLI turns into a one-line message and exit code 2."""


class FerkerasError(Exception):
    """A user-facing problem (bad file, bad flag): the message names what and where."""
