"""One exception type for every problem a user can fix: its message is a sentence to show as is."""


class CliplabError(Exception):
    """A user-facing error: says what was wrong and what to do. Front ends show str(error) only."""
