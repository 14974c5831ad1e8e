"""Share URLs as users write them, and the one line each malformed kind gets."""

from __future__ import annotations

import re

import pytest

from rescue.errors import UsageError
from rescue.stores.url import StoreUrl, is_store_url, parse


@pytest.mark.parametrize(("text", "expected"), [
    ("ssh://nas/srv/images/disk.qcow2", StoreUrl("ssh", "nas", "/srv/images/disk.qcow2")),
    ("ssh://me@nas:2222/~/x.img", StoreUrl("ssh", "nas", "/~/x.img", "me", 2222)),
    ("SMB://alice@192.168.1.5/backup/pc/disk.qcow2",
     StoreUrl("smb", "192.168.1.5", "/backup/pc/disk.qcow2", "alice")),
    ("smb://server:4455/share/a%20b.img", StoreUrl("smb", "server", "/share/a b.img", None, 4455)),
    ("nfs://filer/export/images/x.qcow2", StoreUrl("nfs", "filer", "/export/images/x.qcow2")),
    ("ssh://[::1]:22/tmp/x.img", StoreUrl("ssh", "::1", "/tmp/x.img", None, 22)),
])
def test_parses_each_form(text: str, expected: StoreUrl) -> None:
    assert parse(text) == expected


def test_the_folder_and_name_of_an_image() -> None:
    url = parse("smb://alice@nas:4455/backup/pc/disk.qcow2")
    assert (url.name, url.share, str(url.parent)) == (
        "disk.qcow2", "backup", "smb://alice@nas:4455/backup/pc")
    assert str(parse("ssh://[::1]:22/tmp/x.img")) == "ssh://[::1]:22/tmp/x.img"


@pytest.mark.parametrize("text", ["/dev/sda", "disk.qcow2", "sim:size=1M", "http://x/y.img",
                                  "ssh:/nas/x.img"])
def test_local_paths_are_not_urls(text: str) -> None:
    assert not is_store_url(text)


@pytest.mark.parametrize(("text", "said"), [
    ("smb://alice:hunter2@nas/share/x.img", "give no password in the URL"),
    ("ssh://me:pw@nas/x.img", "give no password in the URL"),
    ("ssh:///x.img", "no server named"),
    ("smb://nas/x.img", "name the share and a path inside it"),
    ("nfs://filer/", "name the export and a path inside it"),
    ("ssh://nas:99999/x.img", "out of range"),
    ("ssh://nas/x.img?y=1", "takes no '?' or '#' part"),
    # what the mount tools would take for an option (sshfs -oProxyCommand=... runs a command)
    ("ssh://-oProxyCommand=touch${IFS}x/srv/x.img", "is not a server name or address"),
    ("ssh://-oProxyCommand=id@nas/x.img", "is not a user name"),
    ("smb://-h/share/x.img", "is not a server name or address"),
    ("ssh://na$(id)s/x.img", "is not a server name or address"),
    ("ssh://a%20b@nas/x.img", "is not a user name"),
    ("ssh://nas/a%0Ab.img", "the path holds a control character"),
])
def test_malformed_urls_say_what_is_wrong(text: str, said: str) -> None:
    with pytest.raises(UsageError, match=re.escape(said)) as raised:
        parse(text)
    assert "hunter2" not in str(raised.value) and ":pw@" not in str(raised.value)


def test_domain_users_of_smb() -> None:
    assert parse("smb://CORP%5Cann@nas/s/x.img").user == "CORP\\ann"
    assert parse("smb://CORP;ann@nas/s/x.img").user == "CORP;ann"


def test_a_folder_may_be_a_whole_share() -> None:
    assert parse("smb://nas/backup", folder=True) == StoreUrl("smb", "nas", "/backup")
    with pytest.raises(UsageError, match="name the share"):
        parse("smb://nas/", folder=True)
