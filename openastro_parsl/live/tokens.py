"""Per-site upload tokens, kept in the repository as SHA-256 hashes (`openastro-butler add-token SITE`).

A token is 32 random bytes (``secrets.token_urlsafe``): with that much entropy a plain SHA-256 is as safe to
store as a slow password hash, and checking it costs microseconds per upload. The token itself is printed once
and never stored. A request names its site (``X-OpenAstro-Site``) and carries ``Authorization: Bearer TOKEN``;
the hash is compared against every site's with ``hmac.compare_digest`` (constant time), so a token that belongs
to another site is told apart from a wrong one (and logged as such) without a timing side channel.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import OpenAstroError

TOKENS_FILE = Path("live") / "tokens.json"
_SITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_site_name(site: str, what: str = "site name") -> str:
    """A site name is what a telescope sends in a header: 1-64 letters, digits, '.', '_' or '-'."""
    if not _SITE.fullmatch(site or ""):
        raise OpenAstroError(f"{what} {site!r}: use 1-64 letters, digits, '.', '_' or '-' "
                             f"(starting with a letter or digit)")
    return site


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one request's credentials: ``ok``, or why not and which HTTP status says so."""

    ok: bool
    status: int  # 200, 401 (no or unknown credentials) or 403 (a valid token of another site)
    reason: str


class TokenStore:
    """The repository's site tokens (``REPO/live/tokens.json``: site -> sha256, created)."""

    def __init__(self, repo_root: str | Path):
        self.path = Path(repo_root) / TOKENS_FILE

    def _load(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise OpenAstroError(f"{self.path}: unreadable token file ({exc})") from None
        if not isinstance(data, dict):
            raise OpenAstroError(f"{self.path}: expected an object of site -> token hash")
        return data

    def sites(self) -> list[str]:
        return sorted(self._load())

    def add(self, site: str) -> tuple[str, bool]:
        """A new token for ``site`` (replacing its old one, which stops working); (token, replaced)."""
        check_site_name(site)
        data = self._load()
        replaced = site in data
        token = secrets.token_urlsafe(32)
        data[site] = {"sha256": _digest(token), "created": time.time()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        return token, replaced

    def check(self, site: str | None, token: str | None) -> Verdict:
        """Whether ``token`` is ``site``'s; every stored hash is compared, in constant time each."""
        if not token:
            return Verdict(False, 401, "no token (send Authorization: Bearer TOKEN)")
        if not site:
            return Verdict(False, 401, "no site (send X-OpenAstro-Site: SITE)")
        digest = _digest(token)
        owner = None
        for name, entry in self._load().items():
            if hmac.compare_digest(digest, str(entry.get("sha256", ""))):
                owner = name
        if owner == site:
            return Verdict(True, 200, "ok")
        if owner is not None:
            return Verdict(False, 403, f"token of site {owner!r} sent for site {site!r}")
        return Verdict(False, 401, f"wrong token for site {site!r}")
