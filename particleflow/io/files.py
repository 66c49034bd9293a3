"""Temporary files beside an output: written completely, then renamed over it."""
import os
import tempfile


def temporary_beside(target, suffix=".tmp"):
    """A new, empty file in ``target``'s folder with a name no other file has (created
    exclusively), for writing before ``os.replace(tmp, target)``: a user's file named
    like ``target + '.tmp'`` is never touched.  Its mode is what a new file gets under
    the process's umask, as ``target`` would have had."""
    folder = os.path.dirname(os.path.abspath(target))
    fd, path = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".", suffix=suffix, dir=folder)
    os.close(fd)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
    return path
