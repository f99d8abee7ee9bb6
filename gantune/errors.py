"""The one exception type for bad input: config, dataset, checkpoint, weights, command line.

The CLI prints it as a single line and exits non-zero; anything else is a bug and keeps its
traceback.
"""


class GantuneError(Exception):
    """Bad input. The message names the file or key and what was expected."""
