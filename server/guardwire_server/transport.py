"""Transport security: TLS / mutual TLS credentials, the bearer token, Unix socket permissions.

Everything here is read and checked once, at start-up; a bad file is a ``ConfigError`` that
names the option (the process exits with status 2 before it listens).

* **TLS** (``tls_cert_file`` + ``tls_key_file``): every TCP listener serves TLS. **Mutual TLS**
  (``tls_client_ca_file``): clients must present a certificate signed by that CA, otherwise the
  handshake fails. Unix sockets stay plaintext: they never leave the host and are protected by
  their file mode instead.
* **Bearer token** (``auth_token_file``): the token is read from the file (surrounding
  whitespace stripped); it is never logged (the option is ``secret``).
  ``guardwire_server.interceptors``
  checks it on every call except the gRPC health service, so probes keep working.
* **Unix sockets** (``listen: unix:/path``): bound under a restrictive umask and then chmod-ed to
  ``unix_socket_mode`` (default ``0660``: owner and group, e.g. an app container sharing the
  guard's group; ``0600``: owner only).

Example::

    creds = server_credentials(settings)          # None: plaintext
    port = bind(grpc_server, "127.0.0.1:0", creds, unix_mode=0o660)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import grpc

from guardwire_server.config import ConfigError, Settings

__all__ = ["bind", "read_token", "server_credentials", "unix_socket_path"]


def _read(option: str, path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{option}: cannot read {path!r}: {exc.strerror or exc}") from None
    if not data.strip():
        raise ConfigError(f"{option}: {path!r} is empty")
    return data


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials for the TCP listeners, or None for plaintext."""
    cert, key, ca = settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
    if not (cert or key or ca):
        return None
    if not (cert and key):
        raise ConfigError(
            "tls_cert_file and tls_key_file must be set together"
            + (" (tls_client_ca_file needs them too)" if ca else "")
        )
    chain = _read("tls_cert_file", cert)
    private = _read("tls_key_file", key)
    if b"PRIVATE KEY" not in private:
        raise ConfigError(f"tls_key_file: {key!r} holds no PEM private key")
    if b"CERTIFICATE" not in chain:
        raise ConfigError(f"tls_cert_file: {cert!r} holds no PEM certificate")
    roots = _read("tls_client_ca_file", ca) if ca else None
    return grpc.ssl_server_credentials(
        [(private, chain)], root_certificates=roots, require_client_auth=roots is not None
    )


def read_token(settings: Settings) -> str | None:
    """The bearer token from ``auth_token_file`` (None: no token check)."""
    if not settings.auth_token_file:
        return None
    raw = _read("auth_token_file", settings.auth_token_file)
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigError("auth_token_file: the token must be ASCII") from None
    if any(c.isspace() for c in token):
        raise ConfigError("auth_token_file: the token must be one word (no whitespace inside)")
    return token


def unix_socket_path(address: str) -> Path | None:
    """The file of a ``unix:`` listen address (``unix:rel``, ``unix:/abs``, ``unix:///abs``);
    None for TCP and abstract sockets."""
    if not address.startswith("unix:"):
        return None
    rest = address[len("unix:") :]
    if rest.startswith("//"):
        rest = rest[2:]
    return Path(rest)


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def bind(
    server: grpc.aio.Server,
    address: str,
    credentials: grpc.ServerCredentials | None,
    *,
    unix_mode: int,
) -> int:
    """Adds a listener; returns its port (0 for a Unix socket). A Unix socket is created under
    a umask that leaves at most ``unix_mode`` and then chmod-ed to exactly ``unix_mode``."""
    path = unix_socket_path(address)
    if path is None:
        if credentials is not None:
            return int(server.add_secure_port(address, credentials))
        return int(server.add_insecure_port(address))
    with _umask(0o777 & ~unix_mode):
        server.add_insecure_port(address)
    try:
        os.chmod(path, unix_mode)
    except OSError as exc:
        raise ConfigError(f"unix_socket_mode: cannot chmod {str(path)!r}: {exc}") from None
    return 0
