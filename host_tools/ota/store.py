"""The service's bundle store: signed bundles as files, `<dir>/<board>/<version>.atb`.

The service stores and forwards bundles; it holds no release key and cannot
make one (a public key, when configured, lets `add` refuse a bundle the
devices would refuse anyway).  A bundle is checked (structure, every hash)
when added and when loaded.
"""

from pathlib import Path

from atls.ota import format_version, parse_version
from host_tools.ota.bundle import Bundle, BundleError

SUFFIX = ".atb"


class BundleStore:
    def __init__(self, directory, public_key=None):
        self.dir = Path(directory)
        self.public_key = public_key
        self._cache = {}

    def add(self, data):
        """Check and keep a bundle (bytes); returns its Bundle."""
        b = Bundle(data, self.public_key)
        path = self.dir / b.board / (b.version + SUFFIX)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(b.data)
        tmp.replace(path)
        self._cache[(b.board, b.version)] = b
        return b

    def get(self, board, version):
        """The Bundle for (board, version), or None."""
        version = format_version(parse_version(version))
        key = (board, version)
        if key not in self._cache:
            path = self.dir / board / (version + SUFFIX)
            try:
                data = path.read_bytes()
            except OSError:
                return None
            b = Bundle(data, self.public_key)
            if (b.board, b.version) != key:
                raise BundleError("%s holds %s %s" % (path, b.board, b.version))
            self._cache[key] = b
        return self._cache[key]

    def boards_with(self, version):
        """Boards that have a bundle of `version`."""
        version = format_version(parse_version(version))
        return sorted(p.parent.name for p in self.dir.glob("*/" + version + SUFFIX))

    def listing(self):
        """[(board, version)] of every stored bundle."""
        return sorted((p.parent.name, p.stem) for p in self.dir.glob("*/*" + SUFFIX))
