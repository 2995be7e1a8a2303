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
import errno
import logging
import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from guardwire_server.config import ConfigError, Settings

__all__ = ["bind", "read_token", "server_credentials", "unix_socket_path"]

log = logging.getLogger(__name__)


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
    _check_key_pair(cert, key)
    roots = _read("tls_client_ca_file", ca) if ca else None
    if roots is not None:
        try:
            ssl.create_default_context(cadata=roots.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError):
            raise ConfigError(
                f"tls_client_ca_file: {ca!r} holds no valid PEM certificate"
            ) from None
    return grpc.ssl_server_credentials(
        [(private, chain)], root_certificates=roots, require_client_auth=roots is not None
    )


def _check_key_pair(cert: str, key: str) -> None:
    """gRPC only says "failed to bind" for a bad certificate or key: check them here, with
    OpenSSL, so the error names the file and the fault. Warns when the certificate expired."""
    decode = getattr(ssl._ssl, "_test_decode_cert", None)  # type: ignore[attr-defined]
    if decode is not None:
        try:
            not_after = decode(cert).get("notAfter")
        except (ssl.SSLError, ValueError):
            raise ConfigError(f"tls_cert_file: {cert!r} holds no valid PEM certificate") from None
        if not_after and ssl.cert_time_to_seconds(not_after) < time.time():
            log.warning("tls_cert_file: the certificate in %r expired on %s", cert, not_after)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=lambda: b"")  # never prompt for one
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"tls_key_file: {key!r} is not the key of the certificate in {cert!r}"
            ) from None
        raise ConfigError(
            f"tls_cert_file/tls_key_file: OpenSSL cannot load {cert!r} with the key {key!r} "
            "(an invalid certificate, or an invalid or encrypted key)"
        ) from None


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
        try:
            if credentials is not None:
                port = int(server.add_secure_port(address, credentials))
            else:
                port = int(server.add_insecure_port(address))
        except RuntimeError:
            port = 0
        if port == 0:
            raise _bind_error(address)
        return port
    try:
        with _umask(0o777 & ~unix_mode):
            server.add_insecure_port(address)
    except RuntimeError:
        raise _unix_bind_error(address, path) from None
    try:
        os.chmod(path, unix_mode)
    except OSError as exc:
        raise ConfigError(f"unix_socket_mode: cannot chmod {str(path)!r}: {exc}") from None
    return 0


def _bind_error(address: str) -> ConfigError:
    """Why gRPC could not bind a TCP address (it only says that it failed): the host does not
    resolve, or a plain socket's bind on it fails (e.g. the port is in use)."""
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]")
    why = "gRPC could not listen there"
    try:
        infos = socket.getaddrinfo(
            host or None, int(port_text), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, ValueError, UnicodeError):
        why = f"cannot resolve the host {host!r}"
    else:
        for family, kind, proto, _, sockaddr in infos:
            try:
                with socket.socket(family, kind, proto) as probe:
                    probe.bind(sockaddr)
            except OSError as exc:
                why = os.strerror(exc.errno) if exc.errno else str(exc)
                if exc.errno == errno.EADDRINUSE:
                    why += " (another server listens on this port)"
                break
    return ConfigError(f"listen: cannot bind {address!r}: {why}")


def _unix_bind_error(address: str, path: Path) -> ConfigError:
    parent = path.parent
    if not parent.is_dir():
        why = f"the directory {str(parent)!r} does not exist"
    elif not os.access(parent, os.W_OK | os.X_OK):
        why = f"the directory {str(parent)!r} is not writable"
    else:
        why = "gRPC could not listen there"
    return ConfigError(f"listen: cannot bind {address!r}: {why}")
