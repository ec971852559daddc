"""A lease per expert, kept in the MLflow registry itself, so concurrent runs never train one expert twice.

It works on every MLflow backend (sqlite, a server on PostgreSQL) because it needs one
atomic operation they all have: creating a registered model whose name exists fails (a
unique key in the database). A lease is a registered model `moe-lease.<pipeline>.<expert>.<g>`
whose tags say who holds it and until when; the MLflow run training under it carries the
lease's token as a tag, so whoever takes over an expired lease finds that run. To take a
free or expired lease, a run creates generation g+1 of the highest it saw: of two runs that
race, exactly one succeeds. The holder renews the expiry while it trains and deletes its
lease when done (a hard delete, so the name is free again). A killed holder renews nothing:
its lease expires after `ttl` seconds, or at once when the holder was a process of this host
that no longer exists.

Must not train, read tensors or decide what is stale; it only says who may write an expert.
"""
from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from moe_pipeline.errors import RegistryError
from moe_pipeline.registry.reader import _short
from moe_pipeline.registry.scratch import pid_alive

PREFIX = "moe-lease."
TOKEN = "moe.lease.token"  # on the lease and on the run trained under it
DEFAULT_TTL = float(os.environ.get("MOE_LEASE_TTL", "60"))  # seconds; renewed every ttl/3 while held
POLL = 0.25  # seconds between looks at a lease held by another run


class LeaseTimeout(RegistryError):
    """Another run held the expert's lease for longer than `run --wait` allows."""


@dataclass(frozen=True)
class Holder:
    """One generation of an expert's lease, as its tags describe it."""

    name: str
    generation: int
    token: str
    host: str
    pid: int
    expires: float

    def expired(self, now: float) -> bool:
        """Whether the holder is gone: a dead pid of this host, or an expiry nobody renewed before `now`."""
        gone = self.host == socket.gethostname() and not pid_alive(self.pid)
        return gone or self.expires < now

    def describe(self) -> str:
        """Who holds it, in words: the host and pid of its run."""
        return f"a run on {self.host} (pid {self.pid})"


class Lease:
    """The lease of one expert. `acquire` waits for it; `release` gives it back; `holds` is the fence."""

    def __init__(self, registry, expert: str, ttl: float = DEFAULT_TTL):
        self.registry = registry
        self.expert = expert
        self.ttl = ttl
        self.base = f"{PREFIX}{registry.model_name(expert)}."
        self.token = uuid.uuid4().hex
        self.held: str | None = None  # the registered model name of our generation
        self.reaped: list[Holder] = []  # expired leases we took over: their runs are the caller's to clean up
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    # ------------------------------------------------------------ reading

    def holders(self) -> list[Holder]:
        """Every generation of this expert's lease in the registry, lowest first."""
        return [holder for head, holder in _search(self.registry, self.base) if head == ""]

    # ------------------------------------------------------------ taking and giving back

    def acquire(self, wait: float, on_wait: Callable[[Holder], None] | None = None) -> bool:
        """Take the lease, waiting up to `wait` seconds while another live run holds it.

        Returns whether it had to wait (the registry may have moved meanwhile)."""
        from mlflow.exceptions import MlflowException

        deadline, waited = time.monotonic() + wait, False
        while True:
            holders = self.holders()
            now = time.time()
            live = [h for h in holders if not h.expired(now)]
            if not live:
                name = f"{self.base}{(holders[-1].generation if holders else 0) + 1}"
                try:
                    self.registry.requests += 1
                    self.registry.client.create_registered_model(
                        name, tags=self._tags(now), description=f"lease: {self.expert} is being trained by "
                        f"{socket.gethostname()} pid {os.getpid()}; deleted when it is done")
                except MlflowException as exc:
                    # Another run took this generation first: look again. MLflow's SQL store answers a
                    # name clash by reading the existing model; if its holder already gave it back, that
                    # read says "does not exist" instead (a real race, seen with four runs on sqlite).
                    if str(exc.error_code) in {"RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"}:
                        continue
                    raise RegistryError(f"cannot take the lease of '{self.expert}': {_short(exc)}") from None
                self.held = name
                self.reaped = holders
                for old in holders:  # expired generations: nobody renews them any more
                    self._delete(old.name)
                self._start_renewing()
                return waited
            if time.monotonic() >= deadline:
                holder = live[-1]
                raise LeaseTimeout(f"expert '{self.expert}' is being trained by {holder.describe()}; waited "
                                   f"{wait:.0f} s for it. Wait longer with `run --wait SECONDS`")
            if not waited and on_wait is not None:
                on_wait(live[-1])
            waited = True
            time.sleep(POLL)

    def run_tags(self) -> dict[str, str]:
        """Tags for the MLflow run training under this lease: whoever reaps it finds the run by them
        (one search then, instead of a tag write on every training)."""
        return {TOKEN: self.token}

    def holds(self) -> bool:
        """The fence before registering: our generation still exists and none is above it."""
        if self.held is None:
            return False
        holders = self.holders()
        return bool(holders) and holders[-1].name == self.held and holders[-1].token == self.token

    def release(self) -> None:
        """Stop renewing the lease and give it back (delete the lease this run holds)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        if self.held is not None:
            self._delete(self.held)
            self.held = None

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        try:
            self.release()
        except RegistryError:
            # Leaving on an error (a full disk, a registry gone): that error is the one to report.
            # The lease left behind expires unrenewed, and the next run deletes it.
            if kind is None:
                raise

    # ------------------------------------------------------------ internals

    def _tags(self, now: float) -> dict[str, str]:
        return {"moe.lease": self.expert, TOKEN: self.token, "moe.lease.host": socket.gethostname(),
                "moe.lease.pid": str(os.getpid()), "moe.lease.expires": f"{now + self.ttl:.3f}"}

    def _delete(self, name: str) -> None:
        delete_lease(self.registry, name)

    def _start_renewing(self) -> None:
        """Push the expiry forward every ttl/3 from a thread with its own client (training holds the GIL
        only between torch calls, so this keeps time while an expert trains)."""
        from mlflow.tracking import MlflowClient

        held, uri = self.held, self.registry.tracking_uri
        self._stop.clear()

        def renew() -> None:
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            while not self._stop.wait(self.ttl / 3):
                try:
                    client.set_registered_model_tag(held, "moe.lease.expires", f"{time.time() + self.ttl:.3f}")
                except Exception:  # a missed renewal is retried; the fence catches a lease lost meanwhile
                    pass

        self._renewer = threading.Thread(target=renew, name=f"lease-{self.expert}", daemon=True)
        self._renewer.start()


def _search(registry, base: str) -> list[tuple[str, Holder]]:
    """The leases whose names start with `base`, lowest generation first, each with what stands
    between `base` and its generation: "" under an expert's base, the expert under a pipeline's."""
    escaped = base.replace("'", "''")
    found = []
    for model in registry._pages("search leases", registry.client.search_registered_models,
                                 f"name LIKE '{escaped}%'", 1000):
        head, _, suffix = model.name[len(base):].rpartition(".")
        if not model.name.startswith(base) or not suffix.isdigit():  # LIKE's `_` matches any character
            continue
        tags = dict(model.tags or {})
        found.append((head, Holder(model.name, int(suffix), tags.get(TOKEN, ""), tags.get("moe.lease.host", ""),
                                   int(tags.get("moe.lease.pid", "0") or 0),
                                   float(tags.get("moe.lease.expires", "0") or 0))))
    return sorted(found, key=lambda found: found[1].generation)


def dead_leases(registry, experts) -> list[tuple[str, Holder]]:
    """(expert, holder) of every lease of these experts whose holder is gone or stopped renewing:
    one search for the whole pipeline."""
    now, known = time.time(), set(experts)
    return [(expert, holder) for expert, holder in _search(registry, f"{PREFIX}{registry.model_name('')}")
            if expert in known and holder.expired(now)]


def delete_lease(registry, name: str) -> None:
    """A hard delete (the name is free again); one that another run deleted first is fine."""
    from mlflow.exceptions import MlflowException

    try:
        registry.requests += 1
        registry.client.delete_registered_model(name)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" not in str(exc.error_code):  # someone reaped it first: fine
            raise RegistryError(f"cannot delete lease {name}: {_short(exc)}") from None
