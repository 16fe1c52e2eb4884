"""One rule for the paths that data files list inside a data root (image lists, the R1M list): a listed entry
names a file under its folder, never one outside it."""

from pathlib import PurePosixPath


def relative_inside(entry):
    """``entry`` as a relative POSIX path that stays inside the folder it is relative to.

    Raises ``ValueError`` saying why not: empty, absolute, holding a ``..`` part or a NUL character.
    """
    path = PurePosixPath(entry)
    if not entry or "\0" in entry:
        raise ValueError("an empty name or one holding a NUL character")
    if path.is_absolute():
        raise ValueError("an absolute path")
    if ".." in path.parts:
        raise ValueError("a path through '..'")
    return path
