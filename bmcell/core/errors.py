"""The base of every error bmcell reports to a user as a one-line message instead of a traceback."""


class BmcellError(ValueError):
    """A problem with the user's input (paths, data, checkpoints, options), with what to do about it."""
