"""The one exception type raised for bad or missing data."""


class DataError(ValueError):
    """A data file or folder is missing, malformed or unreadable.

    A ValueError subclass so callers that already catch ValueError keep working;
    the message always names the offending path and, where useful, what was expected.
    """
