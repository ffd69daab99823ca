"""CURVE keys: reading the ``security`` settings into the key set of each role, and making keys.

Certificates are the ZeroMQ certificate files that pyzmq's ``zmq.auth.create_certificates`` (and
``charon keys generate``) write: ``NAME.key`` holds the public key, ``NAME.key_secret`` the public
and the secret key, both Z85 text. Each role asks here for what it needs (:func:`server_keys`,
:func:`worker_keys`, :func:`client_keys`); a configuration that names only part of what the role
needs is refused before any socket exists, with one line naming the setting, so no process runs
half encrypted. Every setting unset means plain sockets, as before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from charon.errors import ConfigError
from charon.settings import SecuritySettings, describe_setting, invalid_setting


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A CURVE key pair, Z85-encoded (40 bytes each)."""

    public: bytes
    secret: bytes


@dataclass(frozen=True, slots=True)
class ServerKeys:
    """What a CURVE server socket needs: its key pair and who may connect (None = any key)."""

    keys: KeyPair
    allowed: frozenset[bytes] | None


@dataclass(frozen=True, slots=True)
class ClientKeys:
    """What a CURVE client socket needs: the server's public key and a key pair of its own."""

    server_public: bytes
    keys: KeyPair


@dataclass(frozen=True, slots=True)
class RouterKeys:
    """The router's two CURVE server sockets: one key pair, separate allow-lists."""

    clients: ServerKeys
    workers: ServerKeys


def _missing(setting: str, needed_by: str, why: str) -> ConfigError:
    return ConfigError(f"{describe_setting(setting)} is needed with {describe_setting(needed_by)}: {why}",
                       setting=setting)


def load_secret(path: Path, setting: str = "security.curve_secret_key") -> KeyPair:
    """The key pair in a secret certificate (``NAME.key_secret``)."""
    public, secret = _load(path, setting)
    if secret is None:
        raise invalid_setting(setting, str(path), "holds no secret key (give the NAME.key_secret file)")
    return KeyPair(public, secret)


def load_public(path: Path, setting: str = "security.curve_server_key") -> bytes:
    """The public key in a certificate (``NAME.key``; a secret certificate holds it too)."""
    return _load(path, setting)[0]


def _load(path: Path, setting: str) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise invalid_setting(setting, str(path), "no such file")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise invalid_setting(setting, str(path), f"not a ZeroMQ certificate ({exc})") from None
    if len(public) != 40:
        raise invalid_setting(setting, str(path), "not a ZeroMQ certificate (no 40-character public-key)")
    if secret is not None and len(secret) != 40:
        raise invalid_setting(setting, str(path), "not a ZeroMQ certificate (secret-key is not 40 characters)")
    return public, secret


def load_allowed(directory: Path, setting: str) -> frozenset[bytes]:
    """The public keys of every ``*.key`` certificate in ``directory`` (an empty list is refused:
    it would shut every peer out)."""
    if not directory.is_dir():
        raise invalid_setting(setting, str(directory), "no such directory")
    keys: set[bytes] = set()
    for cert in sorted(directory.glob("*.key")):
        keys.add(_load(cert, setting)[0])
    if not keys:
        raise invalid_setting(setting, str(directory), "holds no public certificate (NAME.key)")
    return frozenset(keys)


def server_keys(security: SecuritySettings) -> ServerKeys | None:
    """``charon serve``'s client socket: None (plain) unless security.curve_secret_key is set."""
    if security.curve_secret_key is None:
        if security.curve_clients is not None:
            raise _missing("security.curve_secret_key", "security.curve_clients",
                           "the server's own certificate encrypts the socket the allowed clients reach")
        return None
    allowed = None if security.curve_clients is None else load_allowed(security.curve_clients,
                                                                       "security.curve_clients")
    return ServerKeys(load_secret(security.curve_secret_key), allowed)


def router_keys(security: SecuritySettings) -> RouterKeys | None:
    """The router's sockets: both CURVE with the same key pair, or both plain."""
    if security.curve_secret_key is None:
        for given in ("security.curve_clients", "security.curve_workers"):
            if getattr(security, given.split(".")[1]) is not None:
                raise _missing("security.curve_secret_key", given,
                               "the router's own certificate encrypts the sockets the allowed peers reach")
        return None
    if security.curve_workers is None:
        raise _missing("security.curve_workers", "security.curve_secret_key",
                       "with CURVE on, the router admits only the workers whose certificates it holds")
    clients = server_keys(security)
    assert clients is not None
    return RouterKeys(clients, ServerKeys(clients.keys, load_allowed(security.curve_workers,
                                                                     "security.curve_workers")))


def worker_keys(security: SecuritySettings) -> ClientKeys | None:
    """A worker's connection to the router: both its own secret and the router's public key."""
    secret, server = security.curve_secret_key, security.curve_server_key
    if secret is None and server is None:
        return None
    if server is None:
        raise _missing("security.curve_server_key", "security.curve_secret_key",
                       "a worker must know the router's public certificate")
    if secret is None:
        raise _missing("security.curve_secret_key", "security.curve_server_key",
                       "a worker authenticates with its own certificate, listed in the router's curve_workers")
    return ClientKeys(load_public(server), load_secret(secret))


def client_keys(security: SecuritySettings) -> ClientKeys | None:
    """A v1 client's connection (ping, info, simulate, the client library, the gateway's upstream).

    Without its own certificate a client makes a fresh key pair: enough for a server that accepts
    any client key (no curve_clients).
    """
    secret, server = security.curve_secret_key, security.curve_server_key
    if server is None:
        if secret is not None:
            raise _missing("security.curve_server_key", "security.curve_secret_key",
                           "a client must know the server's public certificate")
        return None
    if secret is None:
        public, private = zmq.curve_keypair()
        return ClientKeys(load_public(server), KeyPair(public, private))
    return ClientKeys(load_public(server), load_secret(secret))


def generate(directory: Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` and ``NAME.key_secret`` (mode 0600) into ``directory``; never overwrites."""
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"charon keys generate: NAME {name!r}: a file name without '/' or a leading '.'")
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise ConfigError(f"charon keys generate: {path} exists (remove it to make a new key)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        old = os.umask(0o077)
        try:
            written = zmq.auth.create_certificates(str(directory), name)
        finally:
            os.umask(old)
        os.chmod(public, 0o644)
        os.chmod(secret, 0o600)
    except OSError as exc:
        raise ConfigError(f"charon keys generate: {directory}: {exc.strerror or exc}") from None
    assert {Path(p) for p in written} == {public, secret}
    return public, secret
