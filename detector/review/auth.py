"""Who may decide: analysts' credentials, sessions, CSRF tokens and login throttling.

The users file (``DETECTOR_REVIEW_USERS_FILE``) holds one analyst per line::

    # name:scrypt$N$r$p$salt$hash   (salt and hash in unpadded URL-safe base64)
    alice:scrypt$16384$8$1$7kqK2v9x...$Zb3Q...

Only scrypt hashes are accepted, never a plaintext password; ``detector review --hash-user
NAME`` prints a line for a password typed at the prompt (or read from stdin). The file is
re-read when it changes, so adding or removing an analyst needs no restart (a removed
analyst's open sessions end at their next request).

Sessions live in the service's memory (a random 256-bit token in an ``HttpOnly``,
``SameSite=Strict`` cookie; the server keeps only its SHA-256), each with its own
synchronizer CSRF token. Every comparison of a secret is constant-time. Failed logins are
throttled per name and per client address.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from detector.errors import ConfigError
from detector.review.records import valid_reviewer

__all__ = [
    "LOGIN_FAILURES",
    "LOGIN_FAILURES_PER_CLIENT",
    "LoginThrottle",
    "Session",
    "Sessions",
    "Users",
    "hash_password",
    "tokens_equal",
    "verify_password",
]

# scrypt cost of new hashes: N=2^14, r=8, p=1 is ~16 MiB and tens of milliseconds per check
# (the interactive-login parameters of the scrypt paper); salt and key sizes in bytes.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32
# Largest cost accepted from a users file: N <= 2^17 and r <= 16 keep one check under
# ~256 MiB of memory, so a hand-edited line cannot exhaust the machine.
_MAX_N = 2**17
_MAX_R = 16
_MAX_P = 4
# Passwords longer than this are refused before hashing (characters): no legitimate use,
# and it bounds the work an anonymous request can cause.
MAX_PASSWORD_CHARS = 1024
# Sessions kept at most; the oldest go first (a bound against session flooding by a valid
# user, far above any analyst team).
MAX_SESSIONS = 10_000
# Failed logins allowed per analyst name within the window, then refused until the window
# has passed (count, seconds): guessing one analyst's password gets 5 tries per 5 minutes.
LOGIN_FAILURES = 5
LOGIN_WINDOW_S = 300.0
# Failed logins allowed per client address in the same window: higher, because analysts
# behind one proxy or NAT share an address and one typo-prone colleague must not lock out
# the team; it still stops one machine from spraying passwords over many names.
LOGIN_FAILURES_PER_CLIENT = 30
_MAX_THROTTLED_KEYS = 100_000
log = logging.getLogger(__name__)
_HASH = re.compile(r"^scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9_-]+)\$([A-Za-z0-9_-]+)$")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=2 * 128 * n * r * p + 1024 * 1024,
        dklen=length,
    )


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` for ``password`` (a fresh random salt unless given)."""
    if not password:
        raise ValueError("empty password")
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValueError(f"password longer than {MAX_PASSWORD_CHARS} characters")
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, KEY_BYTES)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def _parse_hash(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    match = _HASH.match(encoded)
    if not match:
        raise ValueError("not an scrypt$N$r$p$salt$hash value")
    n, r, p = (int(match.group(i)) for i in (1, 2, 3))
    if n < 2 or n & (n - 1) or n > _MAX_N or not 1 <= r <= _MAX_R or not 1 <= p <= _MAX_P:
        raise ValueError(f"scrypt parameters out of range (N={n}, r={r}, p={p})")
    salt, key = _unb64(match.group(4)), _unb64(match.group(5))
    if len(salt) < 8 or len(key) < 16:
        raise ValueError("scrypt salt or hash too short")
    return n, r, p, salt, key


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded`` (constant-time comparison of the keys)."""
    n, r, p, salt, key = _parse_hash(encoded)
    if not password or len(password) > MAX_PASSWORD_CHARS:
        return False
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(key)), key)


def tokens_equal(a: str, b: str) -> bool:
    """Constant-time equality of two secrets (any text; different lengths are unequal)."""
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )


@functools.cache
def _dummy_hash() -> str:
    """A valid hash of a random password: checking an unknown name costs the same as a known
    one, so response times do not tell which analyst names exist."""
    return hash_password(secrets.token_urlsafe(16))


class Users:
    """The analysts of a users file, re-read whenever the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._hashes: dict[str, str] = {}
        self.reload()

    @staticmethod
    def parse(lines: Iterable[str], source: str) -> dict[str, str]:
        """``{name: hash}`` from users-file lines; a bad line raises ConfigError naming it."""
        out: dict[str, str] = {}
        for number, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, encoded = line.partition(":")
            where = f"{source}:{number}"
            if not sep or not valid_reviewer(name):
                raise ConfigError(
                    f"{where}: expected name:scrypt$..., with a name of 1..64 letters, "
                    "digits or ._@+-"
                )
            try:
                _parse_hash(encoded)
            except ValueError as exc:
                raise ConfigError(
                    f"{where}: {exc}; only scrypt hashes are accepted, never passwords "
                    "(detector review --hash-user NAME prints a line)"
                ) from None
            if name in out:
                raise ConfigError(f"{where}: {name!r} is listed twice")
            out[name] = encoded
        return out

    def reload(self) -> None:
        """Read the file (ConfigError if it is missing, unreadable or has a bad line)."""
        try:
            stat = self.path.stat()
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the review users file {self.path}: {exc}") from exc
        self._hashes = self.parse(text.splitlines(), str(self.path))
        self._stamp = (stat.st_mtime_ns, stat.st_size)

    def _refresh(self) -> None:
        try:
            stat = self.path.stat()
        except OSError:
            return  # keep the last good list rather than locking everyone out
        if (stat.st_mtime_ns, stat.st_size) != self._stamp:
            try:
                self.reload()
            except ConfigError as exc:  # a half-written edit: keep the last good list
                log.warning("keeping the previous analysts list: %s", exc)

    @property
    def names(self) -> list[str]:
        self._refresh()
        return sorted(self._hashes)

    def exists(self, name: str) -> bool:
        self._refresh()
        return name in self._hashes

    def verify(self, name: str, password: str) -> bool:
        """Whether ``name`` is an analyst with this password (same cost for unknown names)."""
        self._refresh()
        encoded = self._hashes.get(name)
        ok = verify_password(password, encoded or _dummy_hash())
        return ok and encoded is not None


@dataclass(slots=True)
class Session:
    """A logged-in analyst."""

    user: str
    csrf: str
    expires_at: float
    tag: str  # a short hash of the session token: names the session in audit records
    flash: str | None = None


class Sessions:
    """In-memory sessions keyed by the SHA-256 of their cookie token."""

    def __init__(self, ttl_s: float, *, clock: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._by_hash: OrderedDict[str, Session] = OrderedDict()

    @staticmethod
    def _digest(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()

    def create(self, user: str) -> tuple[str, Session]:
        """A new session: ``(cookie token, session)``."""
        self._purge()
        token = secrets.token_urlsafe(32)
        digest = self._digest(token)
        session = Session(user, secrets.token_urlsafe(32), self._clock() + self.ttl_s, digest[:8])
        self._by_hash[digest] = session
        while len(self._by_hash) > MAX_SESSIONS:
            self._by_hash.popitem(last=False)
        return token, session

    def get(self, token: str | None) -> Session | None:
        if not token or len(token) > 256:
            return None
        digest = self._digest(token)
        session = self._by_hash.get(digest)
        if session is None:
            return None
        if session.expires_at <= self._clock():
            del self._by_hash[digest]
            return None
        return session

    def drop(self, token: str | None) -> None:
        if token:
            self._by_hash.pop(self._digest(token), None)

    def drop_user(self, user: str) -> None:
        for digest in [d for d, s in self._by_hash.items() if s.user == user]:
            del self._by_hash[digest]

    def __len__(self) -> int:
        return len(self._by_hash)

    def _purge(self) -> None:
        now = self._clock()
        for digest in [d for d, s in self._by_hash.items() if s.expires_at <= now]:
            del self._by_hash[digest]


class LoginThrottle:
    """At most ``failures`` failed logins per key within ``window_s``; further attempts are
    refused until the window has passed. The service keeps one per analyst name
    (:data:`LOGIN_FAILURES`) and one per client address (:data:`LOGIN_FAILURES_PER_CLIENT`)."""

    def __init__(
        self,
        *,
        failures: int = LOGIN_FAILURES,
        window_s: float = LOGIN_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.window_s = window_s
        self._clock = clock
        self._seen: OrderedDict[str, list[float]] = OrderedDict()

    def _recent(self, key: str) -> list[float]:
        horizon = self._clock() - self.window_s
        times = [t for t in self._seen.get(key, ()) if t > horizon]
        if times:
            self._seen[key] = times
        else:
            self._seen.pop(key, None)
        return times

    def blocked(self, keys: Iterable[str]) -> bool:
        return any(len(self._recent(k)) >= self.failures for k in keys)

    def failed(self, keys: Iterable[str]) -> None:
        now = self._clock()
        for key in keys:
            self._seen.setdefault(key, []).append(now)
            self._seen.move_to_end(key)
        while len(self._seen) > _MAX_THROTTLED_KEYS:
            self._seen.popitem(last=False)

    def succeeded(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._seen.pop(key, None)
