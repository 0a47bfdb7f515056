"""A goosebit plugin that lets goosebit take Berth update files (`.berth`).

goosebit (0.2.12) learns a software's version and compatible hardware by parsing the
uploaded file, and knows two formats: SWUpdate's `.swu` and RAUC's bundles
(`goosebit.updates.swdesc.parse_file` picks by magic). It has no hook for more, so this
plugin, loaded by goosebit at start (`plugins: [berth]`), wraps that function: a file
that starts with Berth's magic `BRTU` is read here, anything else goes to goosebit.

What it reads (docs/FORMAT.md, "Update files" and "Commit objects"): the head, the
signed body, and in it the target commit's `version`. It does not verify the signature:
the version is only the server's label for the file, and the device verifies the
whole file against its own keys before it uses any of it. The compatibility is
goosebit's `default` hardware, which every device has unless it sends `hw_boardname`
and `hw_revision` (`berth agent` sends neither).

`berth_goosebit-0.1.dist-info/` beside this file declares the entry point goosebit
looks plugins up by (group `goosebit.plugins`, name `berth`), so putting this directory
on PYTHONPATH is the whole install, and the tests always run the plugin of the tree
they test. Test support for Berth (testkit/src/goosebit.rs); not shipped.
"""

import hashlib
import re
import struct

from anyio import Path, open_file

from goosebit.db.models import SoftwareImageFormat
from goosebit.schema.plugins import PluginSchema
from goosebit.updates import swdesc

MAGIC = b"BRTU"
# The body of an update file is at most 16 MiB (format/src/limits.rs).
BODY_MAX = 16 << 20
VERSION = re.compile(rb"[A-Za-z0-9][A-Za-z0-9.+~_-]{0,63}")


def release_version(head: bytes, body: bytes) -> str:
    """The target commit's version, from an update file's head and signed body."""
    magic, version, incompat, body_len = struct.unpack_from("<4sHHI", head)
    if (magic, version, incompat) != (MAGIC, 2, 0) or body_len != len(body):
        raise ValueError("not a version 2 Berth update file")
    magic, version, incompat, has_from = struct.unpack_from("<4sHHB", body)
    if (magic, version, incompat) != (b"BRTB", 2, 0) or has_from > 1:
        raise ValueError("not a version 2 Berth update body")
    at = 9 + 32 * has_from
    (commit_len,) = struct.unpack_from("<I", body, at)
    commit = body[at + 4 : at + 4 + commit_len]
    magic, version, incompat = struct.unpack_from("<4sHH", commit)
    if (magic, version, incompat) != (b"BRTC", 1, 0):
        raise ValueError("not a version 1 Berth commit")
    # preamble, root id, has_parent (and the parent), timestamp
    at = 8 + 32
    at += 1 + 32 * commit[at] + 8
    (version_len,) = struct.unpack_from("<H", commit, at)
    name = commit[at + 2 : at + 2 + version_len]
    if len(name) != version_len or not VERSION.fullmatch(name):
        raise ValueError("the commit's version is not a release version")
    return name.decode()


async def parse_berth(file: Path) -> dict:
    async with await open_file(file, "rb") as f:
        head = await f.read(12)
        (body_len,) = struct.unpack_from("<I", head, 8)
        if body_len > BODY_MAX:
            raise ValueError(f"a body of {body_len} bytes is over Berth's limit")
        version = release_version(head, await f.read(body_len))
        await f.seek(0)
        sha1 = hashlib.sha1()
        while chunk := await f.read(1 << 18):
            sha1.update(chunk)
    return {
        "version": version,
        "compatibility": [{"hw_model": "default", "hw_revision": "default"}],
        "size": (await file.stat()).st_size,
        "hash": sha1.hexdigest(),
        # goosebit's column has room for its two formats only; SWU is its default.
        "image_format": SoftwareImageFormat.SWU,
    }


_goosebit_parse_file = swdesc.parse_file


async def parse_file(file: Path) -> dict:
    async with await open_file(file, "rb") as f:
        magic = await f.read(4)
    if magic == MAGIC:
        return await parse_berth(file)
    return await _goosebit_parse_file(file)


swdesc.parse_file = parse_file

config = PluginSchema(name="berth")
