"""Store URLs as users write them: ssh://[user@]host[:port]/path, smb://[user@]server[:port]/share/path,
nfs://server[:port]/export/path."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from rescue.errors import UsageError

SCHEMES = ("ssh", "smb", "nfs")
_LOOKS_LIKE = re.compile(r"^(ssh|smb|nfs)://", re.IGNORECASE)
# A server is a DNS name or an address, a user a login name (smb: DOMAIN\\user or DOMAIN;user).
# Neither may start with "-": the mount tools take such an argument for an option, and
# sshfs's `-oProxyCommand=...` runs a command.
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*|[0-9A-Fa-f:.]+")
_USER = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.$\\;-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def is_store_url(text: str) -> bool:
    """Whether `text` names a file on a share rather than a local path."""
    return bool(_LOOKS_LIKE.match(text))


@dataclass(frozen=True)
class StoreUrl:
    """One file (or folder) on a share; `str()` is the URL as given, without a password."""

    scheme: str
    host: str
    path: str  # absolute, within the server (for smb: /share/...)
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{user}{host}{port}{self.path}"

    @property
    def name(self) -> str:
        """The file's name, the last part of the path."""
        return posixpath.basename(self.path)

    @property
    def parent(self) -> StoreUrl:
        """The folder that holds this file: what is mounted for a job."""
        return StoreUrl(self.scheme, self.host, posixpath.dirname(self.path) or "/", self.user,
                        self.port)

    @property
    def share(self) -> str:
        """SMB's share name, the first part of the path."""
        return self.path.strip("/").split("/")[0]


def parse(text: str, folder: bool = False) -> StoreUrl:
    """The URL `text` names, a file (an image) or with `folder` a folder, which may be a whole
    share; a malformed one is a usage error saying what is wrong."""
    if not is_store_url(text):
        raise UsageError(f"{text!r} is not a share URL (ssh://, smb:// or nfs://)")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as error:
        raise UsageError(f"{text}: {error}") from None
    scheme = parts.scheme.lower()
    if parts.password is not None:
        raise UsageError(f"{scheme}://: give no password in the URL (a password typed there "
                         "stays in the shell's history); "
                         + ("RESCUE_SMB_PASSWORD or the prompt take it" if scheme == "smb"
                            else "use a key (RESCUE_SSH_OPTS='-i KEY')"))
    if not parts.hostname:
        raise UsageError(f"{text}: no server named (e.g. {scheme}://server/path)")
    user = unquote(parts.username) if parts.username else None
    if not _HOST.fullmatch(parts.hostname):
        raise UsageError(f"{text}: {parts.hostname!r} is not a server name or address")
    if user is not None and not _USER.fullmatch(user):
        raise UsageError(f"{text}: {user!r} is not a user name (letters, digits, '.', '_', "
                         "'-', not first)")
    path = posixpath.normpath(unquote(parts.path) or "/")
    if _CONTROL.search(path):
        raise UsageError(f"{text}: the path holds a control character")
    if parts.query or parts.fragment:
        raise UsageError(f"{text}: a share URL takes no '?' or '#' part")
    parts_needed = 1 if folder else 2  # the share, and a file inside it
    if scheme == "smb" and (path == "/" or len(path.strip("/").split("/")) < parts_needed):
        raise UsageError(f"{text}: name the share and a path inside it (smb://server/share/file)")
    if scheme == "nfs" and path == "/":
        raise UsageError(f"{text}: name the export and a path inside it (nfs://server/export/file)")
    return StoreUrl(scheme, parts.hostname, path, user, port)
