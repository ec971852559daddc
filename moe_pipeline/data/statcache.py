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
            found = _pairs(json.loads(file.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
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
            # as two lists, not a list of pairs: 50,000 pairs decode at twice the time
            tmp.write_text(json.dumps({"v": 2, "names": [n for n, _ in entries], "sha256": [h for _, h in entries]},
                                      separators=(",", ":")))
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


def _pairs(found) -> list[list[str]]:
    """A manifest's [name, sha256] pairs, from either form it was written in."""
    if isinstance(found, dict):
        if len(found["names"]) != len(found["sha256"]):
            raise ValueError("a damaged manifest")
        return [[name, digest] for name, digest in zip(found["names"], found["sha256"])]
    return found


def _keep_newest(folder: Path, keep: int) -> None:
    """Delete all but the `keep` most recently used manifests of `folder` (by mtime)."""
    with contextlib.suppress(OSError):
        files = sorted(((p.stat().st_mtime_ns, p) for p in folder.glob("*.json")), reverse=True)
        for _, old in files[keep:]:
            with contextlib.suppress(OSError):
                old.unlink()


def folder_listing(folder: Path) -> tuple[str, dict[str, list[int]]] | None:
    """(signature, {"class/name": [size, mtime_ns, inode, is a regular file, is named like an
    image]}) of every entry one and two levels under `folder` (the image folder's layout), from
    one scandir pass, in the order the image folder lists them; None when an entry cannot be
    stat'ed (a dangling link, a loop): the full check names it."""
    import stat as st_

    from moe_pipeline.pipeline.spec import IMAGE_SUFFIXES

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
                dot = entry.name.rfind(".")  # the suffix as Path.suffix finds it (".png" alone has none)
                stats[name] = [st.st_size, st.st_mtime_ns, st.st_ino, int(st_.S_ISREG(st.st_mode)),
                               int(dot > 0 and entry.name[dot:].lower() in IMAGE_SUFFIXES)]
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
        known_names, known_stats, known_sha256 = self._read()
        index = dict(zip(known_names, range(len(known_names))))
        new_stats: list[int] = []
        out = []
        for name in names:
            i, stat = index.get(name), stats.get(name)
            if i is not None and stat is not None and known_stats[3 * i:3 * i + 3] == stat[:3]:
                digest = known_sha256[i]
            else:
                stat = stat or _stat(folder / name)
                digest = sha256_file(folder / name)
                self.hashed += 1
            new_stats += stat[:3]
            out.append(digest)
        if self.path is not None and (self.hashed or names != known_names):
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # three flat lists, not an object of small lists: half the time to read back
                tmp.write_text(json.dumps({"v": 2, "names": names, "stats": new_stats, "sha256": out},
                                          separators=(",", ":")))
                os.replace(tmp, self.path)
            except OSError:  # as the stat cache: a folder that cannot be written costs only the table
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
        return out


    def _read(self) -> tuple[list[str], list[int], list[str]]:
        """(names, their [size, mtime_ns, inode] one after the other, their sha256), from either
        form the table was written in."""
        try:
            found = json.loads(self.path.read_text()) if self.path and self.path.exists() else {}
            if "v" not in found:  # the first form: name -> [size, mtime_ns, inode, sha256]
                return list(found), [v for entry in found.values() for v in entry[:3]], [e[3] for e in found.values()]
            names, stats, digests = found["names"], found["stats"], found["sha256"]
            if len(stats) == 3 * len(names) == 3 * len(digests):
                return names, stats, digests
        except (OSError, ValueError, KeyError, TypeError, IndexError):  # a damaged table only costs a re-hash
            pass
        return [], [], []


def _stat(file: Path) -> list[int]:
    st = file.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]
