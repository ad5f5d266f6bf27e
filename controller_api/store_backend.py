"""Which store a controller uses (`--store sqlite|etcd`): SQLite is one file in the state dir,
etcd is shared by every replica (so anything replicas must agree on lives there, the CA included:
see `pki.shared_ca`)."""

from __future__ import annotations

from pathlib import Path

from controller_api.settings import BACKENDS, StoreSettings
from controller_api.store import EtcdStore, EtcdTls, SqliteStore, Store, StoreError

DB_FILE = "controller.db"


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StoreError(f"{what} {path}: {exc.strerror}") from None


def open_store(settings: StoreSettings, state_dir: Path) -> Store:
    if settings.backend == "sqlite":
        return SqliteStore(state_dir / DB_FILE)
    if settings.backend != "etcd":
        raise StoreError(f"unknown store {settings.backend!r} (one of {', '.join(BACKENDS)})")
    if not settings.etcd_endpoints:
        raise StoreError("--store etcd needs --etcd-endpoints HOST:PORT[,HOST:PORT...]")
    tls = None
    ca = _read(settings.etcd_ca, "etcd CA")
    if ca is not None:
        tls = EtcdTls(ca, _read(settings.etcd_cert, "etcd client certificate"),
                      _read(settings.etcd_key, "etcd client key"))  # fmt: skip
    elif settings.etcd_cert or settings.etcd_key:
        raise StoreError("--etcd-cert/--etcd-key need --etcd-ca")
    store = EtcdStore(settings.etcd_endpoints, prefix=settings.etcd_prefix, tls=tls)
    store.revision()  # fail now, in one line, if etcd does not answer
    return store
