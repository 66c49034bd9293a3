"""Files beside an output: temporaries written completely, then renamed over it, and
the lock that makes one process at a time the writer of an output."""
import contextlib
import fcntl
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


@contextlib.contextmanager
def output_lock(path):
    """Hold an exclusive lock on ``path + '.lock'`` (``fcntl.flock``, released by the
    kernel when the process dies) while a run writes ``path``; a second process is
    refused at once with a ValueError naming the holder's pid.  The lock file holds the
    pid and is removed when the run ends; a process that locked a lock file its last
    holder had just removed notices (another inode now has the name) and tries again."""
    lock = path + ".lock"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                other = os.read(fd, 32).decode(errors="replace").strip()
            except OSError:
                other = ""
            os.close(fd)
            raise ValueError(f"{path} is being written by another particleflow process (pid {other or '?'}); "
                             "wait for it to finish, or choose another --out") from None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    try:
        yield
    finally:
        try:
            os.remove(lock)
        except OSError:
            pass
        os.close(fd)


def lock_holder(path):
    """The pid (a string) of the process that holds ``output_lock(path)``, or None."""
    try:
        fd = os.open(path + ".lock", os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return os.read(fd, 32).decode(errors="replace").strip() or "?"
    finally:
        os.close(fd)
