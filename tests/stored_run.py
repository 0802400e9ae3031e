"""`StoredRun`: an in-memory run with the shape of what `parallax_probe.store.open_run` returns
(named arrays, names(), meta, path), for tests of the analysis on planted values."""


class StoredRun:
    def __init__(self, arrays: dict, meta: dict, path: str):
        self.arrays, self.meta, self.path = arrays, meta, path

    def __getitem__(self, name):
        return self.arrays[name]

    def names(self):
        return list(self.arrays)
