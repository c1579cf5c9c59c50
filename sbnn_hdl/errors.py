"""The project's exception hierarchy.

Every refusal of user input raises a subclass of :class:`SbnnError`. Command-line tools catch
exactly this type, print ``str(error)`` as one line and exit with status 2, so a message must
stand on its own: it names the file (when there is one), the part of it, what was expected and
what was found.
"""

__all__ = ["SbnnError", "ModelError", "InputError"]


class SbnnError(Exception):
    """Base class of every error that the project raises for bad input."""


def _describe(where, expected, found):
    return f"{where}: expected {expected}, found {found}"


class ModelError(SbnnError, ValueError):
    """A model (a ``.sbnn`` file, or a model object being built) breaks the format's rules.

    Attributes
    ----------
    path : str or None
        The file the model came from, when it came from a file.
    where : str
        The part at fault: ``"manifest.json key 'version'"``, ``"layer 'fc1'"``,
        ``"layer 'fc1' member 'fc1.mask.npy' (mask)"`` ...
    expected, found : str
        What the format requires there, and what was there instead.
    """

    def __init__(self, where, expected, found, *, path=None):
        self.path = None if path is None else str(path)
        self.where = where
        self.expected = expected
        self.found = found
        super().__init__(self._message())

    def _message(self):
        text = _describe(self.where, self.expected, self.found)
        return text if self.path is None else f"{self.path}: {text}"

    def __str__(self):
        return self._message()

    def in_file(self, path):
        """Return a copy of this error that names ``path`` as the file it is about."""
        return ModelError(self.where, self.expected, self.found, path=path)


class InputError(SbnnError, ValueError):
    """Input samples (or a file holding them) do not fit the model they are given to."""

    def __init__(self, where, expected, found):
        self.where = where
        self.expected = expected
        self.found = found
        super().__init__(_describe(where, expected, found))
