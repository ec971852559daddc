"""A pipeline's data as the rest of the project sees it: each source loaded once per process,
each field's content hash computed once (and, where it can be, never again).

Hashing is cheap on purpose: file sources hash their bytes behind a stat cache (a table's
fields are hashed from their parsed values, once per version of the file's bytes), built-in
sources look their hash up by settings and code version; only a custom loader is run to
be hashed. Importing this module loads no torch (loading a source does). Must not train or
touch the registry.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from moe_pipeline.errors import DataError

from moe_pipeline.pipeline.paths import source_path
from moe_pipeline.pipeline.spec import FILE_LOADERS, SPLITS

if TYPE_CHECKING:
    from moe_pipeline.data.sources import SourceData
    from moe_pipeline.data.streamed import StreamedSource
    from moe_pipeline.pipeline.spec import Pipeline

BUILTIN_LOADERS = ("sklearn.digits", "synthetic.planted")
TABLE_HASHES = 1  # how a table field's values are hashed: a new way is a new number


FOLDER_HASHES = 1  # the form of an image folder's listing key; a change re-derives every folder's hashes


@functools.lru_cache(maxsize=1)
def _builtin_code_version() -> str:
    """What decides a built-in source's content besides its settings: our data code and the
    versions of the libraries that generate or ship the data (read without importing them)."""
    from importlib.metadata import PackageNotFoundError, version

    here = Path(__file__).parent
    parts = [(here / name).read_text() for name in ("sources.py", "store.py")]
    for package in ("scikit-learn", "numpy", "torch"):
        try:
            parts.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            parts.append(f"{package} missing")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


class DataStore:
    """Loads each source of a pipeline once per process and hashes its fields once."""

    def __init__(self, pipeline: Pipeline, root: Path | None = None, cache: Any = None,
                 where: Callable[..., str] | None = None):
        """`where(*key_path)`: the `FILE:LINE:COL` of a YAML key; a source's data errors start with it."""
        from moe_pipeline.data.statcache import StatCache

        self.pipeline = pipeline
        self.where = where
        self.root = root  # data file paths are relative to it
        self.cache = cache if cache is not None else StatCache(None)
        self._sources: dict[str, SourceData] = {}
        self._streamed: dict[str, StreamedSource] = {}  # sources read a block at a time (max_host_memory_gb)
        self._hashes: dict[str, str] = {}
        self._listings: dict[Path, Any] = {}  # image folder -> statcache.folder_listing, once per store
        self._names: dict[Path, list[str]] = {}  # image folder -> its images, once per store

    def source(self, name: str) -> SourceData:
        if name not in self._sources:
            from moe_pipeline.data.sources import load_source  # torch: only when data is really read

            with self._at_source(name):
                self._sources[name] = load_source(name, self.pipeline.sources[name], self.pipeline.seed, self.root)
        return self._sources[name]

    def streamed(self, name: str) -> StreamedSource:
        """The source read a block of rows at a time, never whole."""
        if name not in self._streamed:
            from moe_pipeline.data.streamed import open_streamed

            source = self.pipeline.sources[name]
            with self._at_source(name):
                self._streamed[name] = open_streamed(name, source, self.pipeline.seed,
                                                     source_path(self.root, source.path))
        return self._streamed[name]

    def described(self, name: str) -> SourceData | StreamedSource:
        """What is known of a source's fields (names, classes, fitted transforms), however it was read."""
        return self._streamed.get(name) or self.source(name)

    @contextlib.contextmanager
    def _at_source(self, name: str) -> Iterator[None]:
        """A data error while reading a source is the source's: it is reported at the source's key
        in the pipeline file, not at the expert that happened to read it first."""
        try:
            yield
        except DataError as exc:
            if exc.placed or self.where is None:
                raise
            placed = DataError(f"{self.where('sources', name)}: source '{name}': {exc}")
            placed.placed = True
            raise placed from None

    def field_format(self, ref: str) -> dict[str, Any]:
        """What reading one source field from a user's file takes (a version's spec.json keeps it,
        so `predict` need not load the training data to learn it): its shape per row and dtype,
        a table field's column names, an image field's size and mode."""
        owner, _, field = ref.partition(".")
        source = self.pipeline.sources[owner]
        if owner in self._streamed:
            data = self._streamed[owner]
            shape, dtype = data.formats[field]
            out: dict[str, Any] = {"shape": list(shape), "dtype": dtype}
        else:
            data = self.source(owner)
            raw = data.raw_field(field, "test")
            out = {"shape": list(raw.shape[1:]), "dtype": str(raw.dtype).replace("torch.", "")}
        if source.loader in ("csv", "parquet") and data.names.get(field):
            out["columns"] = list(data.names[field])
        if source.loader == "imagefolder" and field == "image":
            out["image"] = {"size": list(source.size), "mode": source.mode}
        return out

    def field_hash(self, ref: str) -> str:
        """Content hash of `source.field` including which rows form each split.

        A file source is hashed from its files' bytes (behind the stat cache) and its
        settings, without parsing it: what the file says decides the field and its split.
        """
        if ref not in self._hashes:
            owner, _, field = ref.partition(".")
            source = self.pipeline.sources[owner]
            with self._at_source(owner):
                if source.loader in FILE_LOADERS:
                    self._hashes[ref] = self._file_hash(source, field)
                elif source.loader in BUILTIN_LOADERS:
                    self._hashes[ref] = self._builtin_hash(owner, source, field)
                else:  # a custom loader may read anything: it runs every time
                    self._hashes[ref] = self._content_hash(owner, field)
        return self._hashes[ref]

    def _content_hash(self, owner: str, field: str) -> str:
        from moe_pipeline.data.sources import field_hash

        data = self.source(owner)
        digest = hashlib.sha256(field_hash(data.fields[field]).encode())
        for split in SPLITS:
            digest.update(field_hash(data.splits[split]).encode())
        return digest.hexdigest()

    def _builtin_hash(self, owner: str, source: Any, field: str) -> str:
        """A built-in source is a pure function of its settings, the seed, this package's data code
        and the library versions: its content hash is computed once and then looked up, so
        `status` neither imports torch and scikit-learn nor builds the data."""
        key = hashlib.sha256(json.dumps([source.model_dump(mode="json"), self.pipeline.seed, field,
                                         _builtin_code_version()], sort_keys=True).encode()).hexdigest()
        found = self.cache.derived(key)
        if found is None:
            found = self._content_hash(owner, field)
            self.cache.put_derived(key, found)
            self.cache.save()
        return found

    def _file_hash(self, source: Any, field: str) -> str:
        path = source_path(self.root, source.path)
        if source.loader in ("csv", "parquet"):
            return self._table_field_hash(source, path, field)
        settings = source.model_dump(mode="json", by_alias=True, exclude={"transform", "path"})
        if source.loader == "imagefolder":
            return self._folder_field_hash(path, settings, field)
        content = self.cache.sha256(path)
        found = hashlib.sha256(json.dumps([content, settings, field, self.pipeline.seed], sort_keys=True).encode()
                               ).hexdigest()
        self.cache.save()
        return found

    def _folder_field_hash(self, path: Path, settings: dict, field: str) -> str:
        """An image folder's field, hashed from its file names (`label`: a label is its file's class
        folder, so a pixel edit leaves it alone) or names and contents (`image`). Looked up under the
        folder's listing signature first: an unchanged folder costs one scandir pass; a changed one
        is listed and checked whole, and only the files whose stat changed are read."""
        listing = self._listing(path)
        key = None
        if listing is not None:
            key = hashlib.sha256(json.dumps([listing[0], settings, field, self.pipeline.seed, FOLDER_HASHES],
                                            sort_keys=True).encode()).hexdigest()
            found = self.cache.derived(f"folder:{key}")
            if found is not None:
                return found
        names = self._image_names(path, listing)
        manifest = None
        if field == "label":
            content: Any = ["names", names]
        else:
            table = self.cache.folder_table(path)
            manifest = [list(pair) for pair in zip(names, table.sha256s(path, names, listing[1] if listing else {}))]
            self.cache.hashed += table.hashed
            content = manifest
        found = hashlib.sha256(json.dumps([content, settings, field, self.pipeline.seed], sort_keys=True).encode()
                               ).hexdigest()
        if manifest is not None:  # kept so that a later change can name the files it touched
            self.cache.put_manifest(found, manifest)
        if key is not None:
            self.cache.put_derived(f"folder:{key}", found)
        self.cache.save()
        return found

    def _listing(self, path: Path):
        """`statcache.folder_listing` of an image folder, once per store (its fields share it)."""
        from moe_pipeline.data.statcache import folder_listing

        if path not in self._listings:
            self._listings[path] = folder_listing(path)
        return self._listings[path]

    def _image_names(self, path: Path, listing) -> list[str]:
        """The folder's images ("class/name"), as `files.image_files` lists them, from the listing
        where every image-named entry is a regular file; else `image_files` itself, which says
        which entry is not (or that there are none)."""
        if path in self._names:
            return self._names[path]
        names = None
        if listing is not None:  # (files, and with it numpy, only where the listing cannot say)
            found = [(name, stat[3]) for name, stat in listing[1].items() if stat[4]]
            if found and all(regular for _, regular in found):
                names = [name for name, _ in found]
        if names is None:
            from moe_pipeline.data.files import image_files

            names = [p.relative_to(path).as_posix() for p, _ in image_files(path)]
        self._names[path] = names
        return names

    def changed_files(self, ref: str, old_hash: str) -> str | None:
        """The DATA reason naming the files of an image folder that changed since the field hashed
        to `old_hash` (`digits.image (data/img/7/0012.png and 2 more) changed`), or None where that
        is not known here (the old list was hashed on another machine; not an image folder)."""
        owner, _, field = ref.partition(".")
        source = self.pipeline.sources[owner]
        if source.loader != "imagefolder" or field == "label":
            return None
        old, new = self.cache.manifest(old_hash), self.cache.manifest(self.field_hash(ref))
        if old is None or new is None:
            return None
        before, after = dict(old), dict(new)
        groups = {"changed": [n for n in after if n in before and before[n] != after[n]],
                  "added": [n for n in after if n not in before],
                  "removed": [n for n in before if n not in after]}
        parts = {verb: f"{source.path.rstrip('/')}/{files[0]}" + (f" and {len(files) - 1} more" if len(files) > 1 else "")
                 for verb, files in groups.items() if files}
        if list(parts) == ["changed"]:
            return f"{ref} ({parts['changed']}) changed"
        return f"{ref} ({'; '.join(f'{what} {verb}' for verb, what in parts.items())})" if parts else None

    def _table_field_hash(self, source: Any, path: Path, field: str) -> str:
        """A table's field is hashed from its own parsed values (and its names, and the rows of
        each split), so an edit blames exactly the fields it touched. The file is parsed only when
        its bytes changed: the values' hashes are kept in the stat cache under the file's sha256
        and the source's settings, so a `touch` costs one re-hash of the file and no parse."""
        settings = source.model_dump(mode="json", by_alias=True, exclude={"transform", "path"})
        key = hashlib.sha256(json.dumps([self.cache.sha256(path), settings, TABLE_HASHES], sort_keys=True).encode()
                             ).hexdigest()
        found = self.cache.derived(f"{key}:{field}")
        if found is None:
            hashes = _table_digests(source, path)
            for name, digest in hashes.items():
                self.cache.put_derived(f"{key}:{name}", digest)
            self.cache.save()
            found = hashes[field]
        # which rows form each split: the seed and the split settings (the row count is in the shape)
        return hashlib.sha256(json.dumps([found, settings["split"], self.pipeline.seed], sort_keys=True).encode()
                              ).hexdigest()


def _table_digests(source: Any, path: Path) -> dict[str, str]:
    """Each field's hash from its parsed values: dtype, shape and bytes, then its names and
    classes. A parquet file is read a block of rows at a time (a file beyond memory is hashed
    too); a CSV whole, as pyarrow's CSV reader reads it."""
    if source.loader == "parquet":
        from moe_pipeline.data.blocks import ParquetBlocks, table_digests

        return table_digests(ParquetBlocks(source, path))
    from moe_pipeline.data.files import read

    return whole_table_digests(read(source, path, ""))


def whole_table_digests(data: Any) -> dict[str, str]:
    """Each field's hash from a table read whole (`files.FileData`)."""
    import numpy as np

    hashes = {}
    for name, values in data.fields.items():
        digest = hashlib.sha256(f"{values.dtype}|{values.shape}|".encode())
        digest.update(np.ascontiguousarray(values).tobytes())
        digest.update(json.dumps([data.names.get(name), data.classes.get(name)]).encode())
        hashes[name] = digest.hexdigest()
    return hashes
