"""The filesystem operations of the updater and the boot selection, on one
object: every operation that changes flash goes through `FS`, so a test can
cut the power between any two of them (tests/test_ota_device.py) and check
that the next boot still selects a verified firmware."""

import os


class FS:
    def mkdir(self, path):
        os.mkdir(path)

    def rename(self, old, new):
        os.rename(old, new)

    def remove(self, path):
        os.remove(path)

    def rmdir(self, path):
        os.rmdir(path)

    def open(self, path, mode):
        return open(path, mode)

    def write(self, fh, data):
        fh.write(data)

    def flush(self, fh):
        fh.flush()

    def close(self, fh):
        fh.close()

    def free(self, path):
        """Free bytes on the filesystem of `path`, or None when unknown."""
        try:
            st = os.statvfs(path)
        except (AttributeError, OSError):
            return None
        return st[0] * st[4]  # f_bsize * f_bavail (MicroPython: f_frsize == f_bsize)


def replace(fs, tmp, dst):
    """Rename tmp over dst.  Atomic on littlefs; FAT's rename cannot replace,
    so there dst is removed first, and a power cut between the two leaves
    only tmp, complete: read_replaced() then reads it."""
    try:
        fs.rename(tmp, dst)
    except OSError:
        if not exists(dst):
            raise
        fs.remove(dst)
        fs.rename(tmp, dst)


def read_replaced(dst, tmp):
    """The content of a file written by replace(): dst, or tmp when dst is
    missing (a replace cut short on FAT).  OSError when neither is there."""
    try:
        return read(dst)
    except OSError:
        return read(tmp)


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def is_dir(path):
    try:
        return os.stat(path)[0] & 0x4000 != 0
    except OSError:
        return False


def size(path):
    """The file's size, or -1 when missing."""
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def rmtree(fs, path):
    """Remove a directory tree (missing is fine); deepest first."""
    if not is_dir(path):
        if exists(path):
            fs.remove(path)
        return
    for name in os.listdir(path):
        p = path + "/" + name
        if is_dir(p):
            rmtree(fs, p)
        else:
            fs.remove(p)
    fs.rmdir(path)


def makedirs(fs, path):
    if not path or is_dir(path):
        return
    parent = path.rpartition("/")[0]
    if parent:
        makedirs(fs, parent)
    fs.mkdir(path)


def read(path, n=-1):
    """Up to n bytes (all when n < 0) of a file, in one allocation of its size."""
    with open(path, "rb") as f:
        return f.read(n if n >= 0 else max(0, size(path)))


def sha256_file(path, buf=None):
    """SHA-256 of a file read through a small buffer, or None when missing."""
    import hashlib

    buf = buf or bytearray(512)
    mv = memoryview(buf)
    h = hashlib.sha256()
    try:
        f = open(path, "rb")
    except OSError:
        return None
    try:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(mv[:n])
    finally:
        f.close()
    return h.digest()
