"""Content hashes of data files behind a stat cache, as DVC's state database does.

A file whose (size, mtime_ns, inode) is unchanged is never read again: `status` on an
unchanged project hashes nothing. The cache is a small JSON file in the project's
`.moe-cache/` (never in the registry, so read-only commands leave the registry as it was).
An image folder has its own table (`.moe-cache/folders/`), read only when the folder's
listing signature (every entry's name, size, mtime and inode, from one scandir pass) differs
from the one its hashes were derived under: a folder of 50,000 unchanged images costs one pass
of stat calls, not 50,000 cache entries. Must not import torch or mlflow.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from moe_pipeline.hashing import sha256_file

# Image folders' file lists kept to name what changed, most recently used first: each is one
# name and sha256 per image (4 MB at 50,000 images), written once per changed folder state, so
# without a bound a folder edited day after day would fill the disk with them.
MAX_MANIFESTS = 32


class StatCache:
    """File hashes keyed by (size, mtime, inode), and hashes derived from settings, in one JSON file."""

    def __init__(self, path: Path | None):
        self.path = path
        self.hits = 0  # files whose hash came from the cache; tests and benchmarks read it
        self.hashed = 0  # files read and hashed
        self._entries: dict[str, dict] | None = None
        self._manifests: dict[str, list[list[str]]] = {}  # kept in memory too, for a cache without a file
        self._dirty = False

    def _load(self) -> dict[str, dict]:
        if self._entries is None:
            try:
                self._entries = json.loads(self.path.read_text()) if self.path and self.path.exists() else {}
            except (OSError, ValueError):  # a damaged cache only costs a re-hash
                self._entries = {}
        return self._entries

    def sha256(self, file: Path) -> str:
        stat = file.stat()
        key = str(file.resolve())
        signature = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        entry = self._load().get(key)
        if entry and entry["stat"] == signature:
            self.hits += 1
            return entry["sha256"]
        digest = sha256_file(file)
        self.hashed += 1
        self._entries[key] = {"stat": signature, "sha256": digest}
        self._dirty = True
        return digest

    def derived(self, key: str) -> str | None:
        """A hash derived from settings and code (not from a file), stored by `put_derived`."""
        entry = self._load().get(f"derived:{key}")
        if entry is not None:
            self.hits += 1
        return entry

    def put_derived(self, key: str, value: str) -> None:
        self._load()[f"derived:{key}"] = value
        self._dirty = True

    def folder_table(self, folder: Path) -> FolderTable:
        """The per-file hash table of one image folder (see the module's docstring)."""
        if self.path is None:
            return FolderTable(None)
        name = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:32]
        return FolderTable(self.path.parent / "folders" / f"{name}.json")

    def manifest(self, key: str) -> list[list[str]] | None:
        """The file list `put_manifest` kept under `key` ([name, sha256] pairs), or None."""
        if self.path is None or key in self._manifests:  # one this process kept: no need to read it back
            return self._manifests.get(key)
        file = self.path.parent / "manifests" / f"{key}.json"
        try:
            found = json.loads(file.read_text())
        except (OSError, ValueError):
            return self._manifests.get(key)
        with contextlib.suppress(OSError):  # used: the last to go (a trained version's list is read every status)
            os.utime(file)
        return found

    def put_manifest(self, key: str, entries: list[list[str]]) -> None:
        """Keep a field's file list under its hash (one small file each, beside the cache: the
        cache itself stays small enough to read on every `status`)."""
        self._manifests[key] = entries
        if self.path is None:
            return
        folder = self.path.parent / "manifests"
        target = folder / f"{key}.json"
        if target.exists():
            return
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(entries, separators=(",", ":")))
            os.replace(tmp, target)
        except OSError:  # as `save`: only the cache is lost (a changed file's reason names the folder)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            return
        _keep_newest(folder, MAX_MANIFESTS)

    def save(self) -> None:
        """Write the cache (atomically). A folder that cannot be written (read-only, full) costs
        only the cache: the next `status` hashes again."""
        if not self._dirty or self.path is None:
            return
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self._entries, sort_keys=True))
            os.replace(tmp, self.path)  # atomic: a concurrent reader sees the old or the new file, never half
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            return
        self._dirty = False


def _keep_newest(folder: Path, keep: int) -> None:
    """Delete all but the `keep` most recently used manifests of `folder` (by mtime)."""
    with contextlib.suppress(OSError):
        files = sorted(((p.stat().st_mtime_ns, p) for p in folder.glob("*.json")), reverse=True)
        for _, old in files[keep:]:
            with contextlib.suppress(OSError):
                old.unlink()


def folder_listing(folder: Path) -> tuple[str, dict[str, list[int]]] | None:
    """(signature, {"class/name": [size, mtime_ns, inode, is a regular file]}) of every entry one
    and two levels under `folder` (the image folder's layout), from one scandir pass, in the order
    the image folder lists them; None when an entry cannot be stat'ed (a dangling link, a loop):
    the full check names it."""
    import stat as st_

    lines, stats = [], {}
    try:
        with os.scandir(folder) as top:
            subs = sorted(top, key=lambda entry: entry.name)
        for sub in subs:
            st = sub.stat()
            lines.append(f"{sub.name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}")
            if not sub.is_dir():
                continue
            with os.scandir(sub.path) as inner:
                entries = sorted(inner, key=lambda entry: entry.name)
            for entry in entries:
                st = entry.stat()
                name = f"{sub.name}/{entry.name}"
                stats[name] = [st.st_size, st.st_mtime_ns, st.st_ino, int(st_.S_ISREG(st.st_mode))]
                lines.append(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{st.st_mode}")
    except OSError:
        return None
    return hashlib.sha256("\n".join(lines).encode()).hexdigest(), stats


class FolderTable:
    """The sha256 of each file of one folder with the stat it was hashed under, in
    `.moe-cache/folders/<sha256 of the folder's path>.json` (None: kept in memory only)."""

    def __init__(self, path: Path | None):
        self.path = path
        self.hashed = 0  # files read and hashed

    def sha256s(self, folder: Path, names: list[str], stats: dict[str, list[int]]) -> list[str]:
        """The sha256 of each of `names` (relative to `folder`); a file whose stat equals the
        one recorded is not read."""
        try:
            known = json.loads(self.path.read_text()) if self.path and self.path.exists() else {}
        except (OSError, ValueError):  # a damaged table only costs a re-hash
            known = {}
        table, out = {}, []
        for name in names:
            entry, stat = known.get(name), stats[name][:3] if name in stats else None
            if entry is None or stat is None or entry[:3] != stat:
                stat = stat or _stat(folder / name)
                entry = [*stat, sha256_file(folder / name)]
                self.hashed += 1
            table[name] = entry
            out.append(entry[3])
        if self.path is not None and table != known:
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_text(json.dumps(table, separators=(",", ":")))
                os.replace(tmp, self.path)
            except OSError:  # as the stat cache: a folder that cannot be written costs only the table
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
        return out


def _stat(file: Path) -> list[int]:
    st = file.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]
