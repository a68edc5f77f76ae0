#!/usr/bin/env python3
"""A stand-in ovlsim worker in Python 3, standard library only.

It speaks the ovlsim worker protocol, version 1 (docs/worker-protocol.md), and refuses
what it does not do with a NotModelled reply, which ovlsim reports as "not applicable",
never as a pass:

    ovlsim run --backend 'worker:python3 examples/worker-python/worker.py' spec/

What it does, honestly: it builds each layer as plain files in a private tmpfs, mounts the
kernel's overlay on them with mount(2), runs each operation as the plain os.* call on the
merged view, and reads layers back into overlay meaning (a whiteout is a char 0/0 device,
as the kernel stores it). It is a second, independent implementation of the worker, not a
proxy to ovlsim's own.

What it refuses (NotModelled), to show how a worker declines what it does not do: a
truncate or a write at an offset past i64::MAX (the syscall takes a signed offset; ovlsim
passes the bits through, Python cannot), and a readdir entry of a type the protocol has no
name for.

Safety: it must run as root. Before it builds anything it enters a new mount namespace,
makes every mount in it private, and mounts a tmpfs over the temp directory inside that
namespace only: nothing it makes is visible on the host, and when it exits (or is killed,
with its parent, by PR_SET_PDEATHSIG) the namespace and every mount in it go with it. While
the overlay is mounted it chroots into the merged directory, so no path of an operation
reaches past the merged root; it escapes back through an fd kept to the old root.
"""

import ctypes
import errno
import json
import os
import shutil
import signal
import stat
import sys
import tempfile

PROTOCOL = "ovlsim-worker"
VERSION = 2

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
LIBC.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
LIBC.fdopendir.restype = ctypes.c_void_p
LIBC.readdir.restype = ctypes.c_void_p
LIBC.readdir.argtypes = [ctypes.c_void_p]
LIBC.closedir.argtypes = [ctypes.c_void_p]
LIBC.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]

AT_FDCWD = -100

CLONE_NEWNS = 0x00020000
MS_RDONLY = 0x1
MS_NODEV = 0x4
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1

# The file types of the protocol, by S_IFMT and by d_type.
KINDS = {
    stat.S_IFDIR: "dir",
    stat.S_IFREG: "file",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
    stat.S_IFIFO: "fifo",
}
D_TYPES = {4: "dir", 8: "file", 10: "symlink", 2: "char", 6: "block", 1: "fifo"}

# The errnos the protocol knows (ovlsim's Errno), and Python's other names for them.
ERRNOS = {
    "EPERM", "ENOENT", "EIO", "EBADF", "EAGAIN", "ENOMEM", "EACCES", "EFAULT", "EBUSY",
    "EEXIST", "EXDEV", "ENODEV", "ENOTDIR", "EISDIR", "EINVAL", "ENFILE", "EMFILE", "ETXTBSY",
    "EFBIG", "ENOSPC", "ESPIPE", "EROFS", "EMLINK", "ERANGE", "ENAMETOOLONG", "ENOSYS",
    "ENOTEMPTY", "ELOOP", "ENODATA", "EOVERFLOW", "E2BIG", "ENXIO", "EOPNOTSUPP", "ESTALE",
}
ALIASES = {"ENOTSUP": "EOPNOTSUPP", "EWOULDBLOCK": "EAGAIN", "EDEADLOCK": "EDEADLK"}

# The kernel's bookkeeping xattrs, left out of dumps and listxattr (as ovlsim's worker does).
BOOKKEEPING = {p + n for p in ("trusted.overlay.", "user.overlay.") for n in ("origin", "impure", "uuid")}

# Files up to this size are read whole; larger ones are answered with a digest.
READ_INLINE_MAX = 64 << 10
READ_MAX = 64 << 20


class Refusal(Exception):
    """A command this worker answers with an error reply instead of a result."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message

    def reply(self):
        return {"Err": {self.kind: self.message}}


def not_modelled(what):
    return Refusal("NotModelled", what)


def usage(what):
    return Refusal("Usage", what)


def failed(what):
    return Refusal("Failed", what)


def errno_name(code):
    """The protocol's name of an errno, or a Failed refusal for one it does not know."""
    name = errno.errorcode.get(code, "")
    name = ALIASES.get(name, name)
    if name not in ERRNOS:
        raise failed("errno %d (%s) is not one the protocol knows" % (code, name or "?"))
    return name


def check(ret, what):
    """Raises OSError for a libc call that failed."""
    if ret != 0:
        code = ctypes.get_errno()
        raise OSError(code, "%s: %s" % (what, os.strerror(code)))


def send(out, value):
    out.write(json.dumps(value, separators=(",", ":")) + "\n")
    out.flush()


# ---------------------------------------------------------------------------------------
# Layers: built from the protocol's FlatLayer, read back into it.


def inside(base, path):
    """`path` (from the layer root, starting with `/`) under `base`, refusing `.` and `..`."""
    parts = [p for p in path.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise usage("bad layer path %r" % path)
    if "\0" in path:
        raise usage("%r contains a NUL byte" % path)
    # Every parent must be a real directory, never a symlink: nothing is followed.
    cur = base
    for p in parts[:-1]:
        cur = os.path.join(cur, p)
        if not stat.S_ISDIR(os.lstat(cur).st_mode):
            raise usage("a parent of %r is not a directory" % path)
    return os.path.join(base, *parts)


def make_node(p, node):
    kind = node["kind"]
    mode = node["mode"] & 0o7777
    if kind == "dir":
        os.mkdir(p, 0o700)
    elif kind == "file":
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            data = node.get("data") or {"len": 0, "extents": []}
            os.ftruncate(fd, data["len"])
            for off, hexed in data["extents"]:
                os.pwrite(fd, bytes.fromhex(hexed), off)
        finally:
            os.close(fd)
    elif kind == "symlink":
        os.symlink(node["target"], p)
    elif kind in ("char", "block"):
        major, minor = node.get("rdev") or (0, 0)
        ifmt = stat.S_IFCHR if kind == "char" else stat.S_IFBLK
        os.mknod(p, ifmt | 0o600, os.makedev(major, minor))
    elif kind == "fifo":
        os.mkfifo(p, 0o600)
    else:
        raise not_modelled("file type %r" % kind)
    return mode


def set_meta(p, node):
    """Owner, mode and xattrs, in that order (chown clears set-id bits)."""
    os.chown(p, node["uid"], node["gid"], follow_symlinks=False)
    if node["kind"] != "symlink":
        os.chmod(p, node["mode"] & 0o7777)
    for name, value in sorted(node.get("xattrs", {}).items()):
        os.setxattr(p, name, bytes(value), follow_symlinks=False)


def build_layer(base, content):
    os.mkdir(base, 0o700)
    metas = [(base, content["root"])]
    for entry in content["entries"]:
        if "Node" in entry:
            e = entry["Node"]
            p = inside(base, e["path"])
            make_node(p, e["node"])
            metas.append((p, e["node"]))
        elif "Link" in entry:
            e = entry["Link"]
            os.link(inside(base, e["to"]), inside(base, e["path"]), follow_symlinks=False)
        else:
            raise not_modelled("layer entry %r" % list(entry))
    # Deepest first, so a read-only directory is made read-only last.
    for p, node in reversed(metas):
        set_meta(p, node)


def data_regions(fd, size):
    """The data regions of a regular file, as (offset, bytes) in offset order, its holes left
    out (SEEK_DATA and SEEK_HOLE). The last page below i64::MAX is read whatever SEEK_DATA
    says: tmpfs does not report data there (ovlsim's `layers::for_each_data` does the same)."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                break
            raise
        hole = os.lseek(fd, start, os.SEEK_HOLE)
        at = start
        while at < hole:
            chunk = os.pread(fd, min(hole - at, 1 << 20), at)
            if not chunk:
                return
            yield at, chunk
            at += len(chunk)
        pos = hole
    at = max(pos, ((1 << 63) - 1) & ~4095)
    while at < size:
        chunk = os.pread(fd, min(size - at, 1 << 20), at)
        if not chunk:
            break
        yield at, chunk
        at += len(chunk)


def read_data(p, size):
    """A regular file's data as the protocol's FileData: its data regions, never its holes."""
    fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        extents = [[at, chunk.hex()] for at, chunk in data_regions(fd, size)]
    finally:
        os.close(fd)
    return {"len": size, "extents": extents}


def node_of(p):
    st = os.lstat(p)
    kind = KINDS.get(stat.S_IFMT(st.st_mode))
    if kind is None:
        raise failed("%s: a file type the protocol has no name for" % p)
    node = {"kind": kind, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
    if kind == "file":
        node["data"] = read_data(p, st.st_size)
    elif kind == "symlink":
        node["target"] = os.readlink(p)
    elif kind in ("char", "block"):
        node["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
    xattrs = {}
    for name in os.listxattr(p, follow_symlinks=False):
        if name not in BOOKKEEPING:
            xattrs[name] = list(os.getxattr(p, name, follow_symlinks=False))
    if xattrs:
        node["xattrs"] = dict(sorted(xattrs.items()))
    return st, node


def dump_index(index, layers):
    """A workdir's index/ (index=on): each entry named LAYER:/path after the lower inode its
    file handle names (hex of struct ovl_fb: 5 header bytes, a 16-byte uuid, then tmpfs's
    handle: generation, then the inode number as two 32-bit words), with its kind; None
    when there is no index/. Names starting with '#' (temporary files, the shared whiteout)
    are left out."""
    try:
        names = os.listdir(index)
    except FileNotFoundError:
        return None
    out = {}
    for name in names:
        if name.startswith("#"):
            continue
        st = os.lstat(os.path.join(index, name))
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            kind = "whiteout"
        elif stat.S_ISDIR(st.st_mode):
            kind = "dir"
        else:
            kind = "file"
        key = "?"
        try:
            fh = bytes.fromhex(name)
        except ValueError:
            fh = b""
        if len(fh) == 33 and fh[1] == 0xFB:
            ino = int.from_bytes(fh[25:29], "little") | (int.from_bytes(fh[29:33], "little") << 32)
            for lname, top in layers:
                found = sorted(
                    "/" + os.path.relpath(os.path.join(dp, n), top)
                    for dp, dns, fns in os.walk(top)
                    for n in dns + fns
                    if os.lstat(os.path.join(dp, n)).st_ino == ino
                )
                if found:
                    key = "%s:%s" % (lname, found[0])
                    break
        out[key] = kind
    return out


def dump_layer(base):
    """The layer as FlatLayer: parents first, names in byte order, a hard link as a Link to
    the first path seen (never between char 0/0 whiteouts)."""
    entries = []
    first_seen = {}

    # The walk changes into each directory and names nodes relative to it, so a tree deeper
    # than PATH_MAX reads back too; it only enters what lstat says is a directory.
    def walk(rel):
        for name in sorted(os.listdir(".")):
            path = rel + "/" + name
            st, node = node_of(name)
            whiteout = node["kind"] == "char" and node["rdev"] == [0, 0]
            if node["kind"] != "dir" and not whiteout and st.st_ino in first_seen:
                entries.append({"Link": {"path": path, "to": first_seen[st.st_ino]}})
                continue
            if node["kind"] != "dir" and not whiteout:
                first_seen[st.st_ino] = path
            entries.append({"Node": {"path": path, "node": node}})
            if node["kind"] == "dir":
                os.chdir(name)
                walk(path)
                os.chdir("..")

    back = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chdir(base)
        _, root = node_of(".")
        walk("")
    finally:
        os.fchdir(back)
        os.close(back)
    return {"root": root, "entries": entries}


def components(path):
    """A layer path's components, refusing `.`, `..` and NUL."""
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts) or "\0" in path:
        raise usage("bad layer path %r" % path)
    return parts


def is_real_dir(rel):
    """Whether `rel` (from the current directory) is a directory, not following a symlink."""
    try:
        return stat.S_ISDIR(os.lstat(rel).st_mode)
    except FileNotFoundError:
        return False


def remove_entry(rel):
    """Removes whatever is at `rel`, recursively (a symlink itself, never its target)."""
    try:
        st = os.lstat(rel)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(rel)
    else:
        os.unlink(rel)


def make_parents(parents):
    """Walks `parents`, making missing directories (mode 0755) and replacing what is not a
    directory with one."""
    cur = "."
    for c in parents:
        cur = cur + "/" + c
        if not is_real_dir(cur):
            remove_entry(cur)
            os.mkdir(cur, 0o755)
    return cur


def existing_dir(parents):
    """The path of `parents` when each is an existing directory, else None."""
    cur = "."
    for c in parents:
        cur = cur + "/" + c
        if not is_real_dir(cur):
            return None
    return cur


def edit_layer(base, edit):
    """An offline edit, with the layer directory as the current directory and every path
    relative to it: `Put`, `Link`, `Remove` as docs/worker-protocol.md describes them."""
    (kind, a), = edit.items()
    back = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chdir(base)
        comps = components(a["path"])
        if not comps:
            raise usage("an edit needs a path below the layer root, not %r" % a["path"])
        if kind == "Put":
            p = make_parents(comps[:-1]) + "/" + comps[-1]
            remove_entry(p)
            try:
                make_node(p, a["node"])
                set_meta(p, a["node"])
            except OSError as e:
                remove_entry(p)  # a node whose metadata was refused is not left half made
                raise Refusal("Refused", [errno_name(e.errno), "%s: %s" % (a["path"], e)])
        elif kind == "Link":
            to = components(a["to"])
            to_dir = existing_dir(to[:-1]) if to else None
            target = to_dir + "/" + to[-1] if to_dir else None
            if target is None or not os.path.lexists(target) or is_real_dir(target):
                raise usage("link target %r is missing or a directory" % a["to"])
            if to != comps:
                p = make_parents(comps[:-1]) + "/" + comps[-1]
                remove_entry(p)
                os.link(target, p, follow_symlinks=False)
        elif kind == "Remove":
            parent = existing_dir(comps[:-1])
            if parent is not None:
                remove_entry(parent + "/" + comps[-1])
        else:
            raise not_modelled("edit %s" % kind)
    finally:
        os.fchdir(back)
        os.close(back)
    return {"Ok": "Done"}


# ---------------------------------------------------------------------------------------
# Operations on the merged view (the process root while mounted).


def stat_json(st):
    kind = KINDS.get(stat.S_IFMT(st.st_mode))
    if kind is None:
        raise failed("a file type the protocol has no name for")
    return {
        "kind": kind,
        "mode": stat.S_IMODE(st.st_mode),
        "size": st.st_size,
        "nlink": st.st_nlink,
        "uid": st.st_uid,
        "gid": st.st_gid,
        "rdev": [os.major(st.st_rdev), os.minor(st.st_rdev)],
        "ino": st.st_ino,
    }


def open_flags(f):
    flags = {"ReadOnly": os.O_RDONLY, "WriteOnly": os.O_WRONLY, "ReadWrite": os.O_RDWR}[f["access"]]
    for key, bit in (("creat", os.O_CREAT), ("excl", os.O_EXCL), ("trunc", os.O_TRUNC),
                     ("append", os.O_APPEND), ("directory", os.O_DIRECTORY), ("nofollow", os.O_NOFOLLOW)):
        if f[key]:
            flags |= bit
    return flags


def sys_open(path, flags, mode=0):
    # O_NONBLOCK: a FIFO must not block the worker.
    return os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC, mode)


def readdir(path):
    """getdents through libc's readdir: each name with its d_type."""
    fd = sys_open(path, os.O_RDONLY | os.O_DIRECTORY)
    dirp = LIBC.fdopendir(fd)
    if not dirp:
        code = ctypes.get_errno()
        os.close(fd)
        raise OSError(code, "fdopendir")
    entries = {}
    try:
        while True:
            ctypes.set_errno(0)
            ent = LIBC.readdir(dirp)
            if not ent:
                code = ctypes.get_errno()
                if code:
                    raise OSError(code, "readdir")
                break
            # struct dirent (glibc, 64-bit): d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name.
            d_type = ctypes.c_ubyte.from_address(ent + 18).value
            name = os.fsdecode(ctypes.string_at(ent + 19))
            if name in (".", ".."):
                continue
            kind = D_TYPES.get(d_type)
            if kind is None:
                raise not_modelled("readdir of %r: d_type %d of %r" % (path, d_type, name))
            entries[name] = kind
    finally:
        LIBC.closedir(dirp)
    return dict(sorted(entries.items()))


MASK = (1 << 64) - 1


def mix(x):
    """SplitMix64's finaliser, as the protocol's digest uses it."""
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def digest(fd, size):
    """The protocol's Digest of a regular file: over its data regions only (never the
    holes), each non-zero little-endian 8-byte word w at index k adds mix(w ^ mix(k))."""
    words = {}
    for at, chunk in data_regions(fd, size):
        for i, b in enumerate(chunk):
            if b:
                k = (at + i) // 8
                words[k] = words.get(k, 0) | b << (8 * ((at + i) % 8))
    return {"size": size, "hash": sum(mix(w ^ mix(k)) for k, w in words.items()) & MASK}


def read(path):
    """The bytes read to end of file, or the digest of a regular file over 64 KiB."""
    fd = sys_open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_size > READ_INLINE_MAX:
            return {"Digest": digest(fd, st.st_size)}
        out = b""
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return {"Data": list(out)}
            out += chunk
            if len(out) > READ_MAX:
                raise failed("read of %r went past %d bytes" % (path, READ_MAX))
    finally:
        os.close(fd)


def run_op(op):
    """One operation: its Outcome, an errno as {"Err": name}."""
    (name, a), = op.items()
    try:
        return op_outcome(name, a)
    except OSError as e:
        return {"Err": errno_name(e.errno)}
    except ValueError as e:  # a NUL byte in a path: no syscall can take it
        raise usage("%s: %s" % (name, e))


def op_outcome(name, a):
    if name == "Stat":
        return {"Stat": stat_json(os.stat(a["path"]))}
    if name == "Lstat":
        return {"Stat": stat_json(os.lstat(a["path"]))}
    if name == "Open":
        os.close(sys_open(a["path"], open_flags(a["flags"]), a["mode"]))
        return "Ok"
    if name == "Read":
        return read(a["path"])
    if name == "Write":
        at = a["at"]
        if at != "Append" and at["Offset"] >= 1 << 63:
            raise not_modelled("write at an offset past i64::MAX")
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if at == "Append" else 0)
        fd = sys_open(a["path"], flags, 0o644)
        try:
            if at == "Append":
                os.write(fd, bytes(a["data"]))
            else:
                os.pwrite(fd, bytes(a["data"]), at["Offset"])
        finally:
            os.close(fd)
        return "Ok"
    if name == "Truncate":
        if a["len"] >= 1 << 63:
            raise not_modelled("truncate to a length past i64::MAX")
        os.truncate(a["path"], a["len"])
        return "Ok"
    if name == "Mkdir":
        os.mkdir(a["path"], a["mode"])
        return "Ok"
    if name == "Rmdir":
        os.rmdir(a["path"])
        return "Ok"
    if name == "Unlink":
        os.unlink(a["path"])
        return "Ok"
    if name == "Rename":
        flags = a["flags"]
        bits = (1 if flags.get("noreplace") else 0) | (2 if flags.get("exchange") else 0)
        bits |= 4 if flags.get("whiteout") else 0
        if not bits:
            os.rename(a["from"], a["to"])
            return "Ok"
        # renameat2(2) through libc: RENAME_NOREPLACE 1, RENAME_EXCHANGE 2, RENAME_WHITEOUT 4.
        old, new = os.fsencode(a["from"]), os.fsencode(a["to"])
        if b"\0" in old or b"\0" in new:
            raise usage("rename: a NUL byte in a path")
        if LIBC.renameat2(AT_FDCWD, old, AT_FDCWD, new, bits) != 0:
            return {"Err": errno_name(ctypes.get_errno())}
        return "Ok"
    if name == "Link":
        os.link(a["from"], a["to"], follow_symlinks=False)
        return "Ok"
    if name == "Symlink":
        os.symlink(a["target"], a["path"])
        return "Ok"
    if name == "Readlink":
        return {"Target": os.readlink(a["path"])}
    if name == "Readdir":
        return {"Entries": readdir(a["path"])}
    if name == "Chmod":
        os.chmod(a["path"], a["mode"])
        return "Ok"
    if name == "Chown":
        unchanged = lambda x: -1 if x == 0xFFFFFFFF else x  # noqa: E731
        os.chown(a["path"], unchanged(a["uid"]), unchanged(a["gid"]))
        return "Ok"
    if name == "Utimes":
        os.utime(a["path"])
        return "Ok"
    if name == "Setxattr":
        os.setxattr(a["path"], a["name"], bytes(a["value"]))
        return "Ok"
    if name == "Getxattr":
        return {"Xattr": list(os.getxattr(a["path"], a["name"]))}
    if name == "Listxattr":
        return {"XattrNames": sorted(n for n in os.listxattr(a["path"]) if n not in BOOKKEEPING)}
    if name == "Removexattr":
        os.removexattr(a["path"], a["name"])
        return "Ok"
    if name == "Mknod":
        kind = a["kind"]
        if kind == "File":
            ifmt, dev = stat.S_IFREG, 0
        elif kind == "Fifo":
            ifmt, dev = stat.S_IFIFO, 0
        elif "Char" in kind:
            ifmt, dev = stat.S_IFCHR, os.makedev(*kind["Char"])
        else:
            ifmt, dev = stat.S_IFBLK, os.makedev(*kind["Block"])
        os.mknod(a["path"], ifmt | a["mode"], dev)
        return "Ok"
    raise not_modelled("operation %s" % name)


def dump_merged():
    """The merged view, read as ovlsim reads it (`dump::walk_merged`): the same calls in the
    same order, since a lookup can leave marks (an origin, an impure parent) on the upper."""
    tree = {}
    queue = ["/"]
    while queue:
        path = queue.pop()
        st = run_op({"Lstat": {"path": path}})
        if "Err" in st:
            tree[path] = {"stat": {"Err": st["Err"]}}
            continue
        s = st["Stat"]
        entry = {"stat": {"Ok": s}}
        if s["kind"] == "file":
            r = run_op({"Read": {"path": path}})
            if "Data" in r:
                entry["data"] = r["Data"]
            elif "Digest" in r:
                entry["digest"] = r["Digest"]
        elif s["kind"] == "symlink":
            r = run_op({"Readlink": {"path": path}})
            if "Target" in r:
                entry["target"] = r["Target"]
        elif s["kind"] == "dir":
            r = run_op({"Readdir": {"path": path}})
            if "Entries" in r:
                for name in r["Entries"]:
                    queue.append(path.rstrip("/") + "/" + name)
        if s["kind"] != "symlink":
            r = run_op({"Listxattr": {"path": path}})
            if "XattrNames" in r:
                xattrs = {}
                for name in r["XattrNames"]:
                    v = run_op({"Getxattr": {"path": path, "name": name}})
                    if "Xattr" in v:
                        xattrs[name] = v["Xattr"]
                if xattrs:
                    entry["xattrs"] = xattrs
        tree[path] = entry
    return tree


# ---------------------------------------------------------------------------------------
# The worker.

DEFAULTS = {"redirect_dir": "off", "index": False, "metacopy": False, "xino": "off", "nfs_export": False}


def mount_options(options):
    """The overlay options of a Mount request: each option with a default only when it is
    given (named, or off its default), as ovlsim's Options::to_mount_string does, so the
    rest are left to the kernel's own defaults."""
    named = options.get("named", {})
    out = []
    for key, default in DEFAULTS.items():
        value = options.get(key, default)
        if named.get(key) or value != default:
            if isinstance(value, bool):
                value = "on" if value else "off"
            out.append("%s=%s" % (key, value))
    for flag in ("userxattr", "volatile"):
        if options.get(flag):
            out.append(flag)
    return out


class Worker:
    def __init__(self):
        # Dies with the parent; a new mount namespace, all private; a tmpfs over the temp
        # directory, in this namespace only.
        check(LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
        check(LIBC.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        check(LIBC.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "making / private")
        tmp = tempfile.gettempdir().encode()
        check(LIBC.mount(b"ovlsim-py", tmp, b"tmpfs", MS_NODEV, b"mode=0700"), "mounting a tmpfs")
        os.umask(0)
        self.base = tempfile.mkdtemp(prefix="ovlsim-worker-")
        self.root_fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.layers = {}  # scenario name -> directory number
        self.mounted = False
        for d in ("l", "w", "m"):
            os.mkdir(os.path.join(self.base, d), 0o755)

    def layer_dir(self, n):
        return os.path.join(self.base, "l", str(n))

    def work_dir(self, n):
        return os.path.join(self.base, "w", str(n))

    def named(self, name):
        if name not in self.layers:
            raise usage("no layer named %r" % name)
        return self.layers[name]

    def unmounted(self, what):
        if self.mounted:
            raise usage("%s needs the overlay unmounted" % what)

    def exec(self, cmd):
        if isinstance(cmd, str):
            name, a = cmd, None
        else:
            (name, a), = cmd.items()
        if name == "Layer":
            self.unmounted("creating a layer")
            old = self.layers.pop(a["name"], None)
            if old is not None:
                shutil.rmtree(self.layer_dir(old))
                shutil.rmtree(self.work_dir(old), ignore_errors=True)
            n = next(i for i in range(len(self.layers) + 1) if i not in self.layers.values())
            try:
                build_layer(self.layer_dir(n), a["content"])
            except OSError as e:
                shutil.rmtree(self.layer_dir(n), ignore_errors=True)
                return {"Err": {"Refused": [errno_name(e.errno), "layer %s: %s" % (a["name"], e)]}}
            except Refusal:
                shutil.rmtree(self.layer_dir(n), ignore_errors=True)
                raise
            self.layers[a["name"]] = n
            return {"Ok": "Done"}
        if name == "Mount":
            if self.mounted:
                raise usage("mount while mounted")
            return self.mount(a["lowers"], a["upper"], a["options"])
        # TryUnmount keeps the open handles; this worker keeps none (it refuses every
        # operation through a handle), so it is Unmount here.
        if name in ("Unmount", "TryUnmount"):
            if not self.mounted:
                raise usage("unmount while unmounted")
            self.unmount()
            return {"Ok": "Done"}
        if name == "Op":
            if not self.mounted:
                raise usage("an operation needs a mount")
            return {"Ok": {"Outcome": run_op(a)}}
        if name == "Edit":
            self.unmounted("an offline edit")
            return edit_layer(self.layer_dir(self.named(a["layer"])), a["edit"])
        if name == "DumpLayer" and a["name"].endswith("/index"):
            self.unmounted("dumping a layer")
            upper = self.named(a["name"][: -len("/index")])
            named = [(n, self.layer_dir(d)) for n, d in sorted(self.layers.items())]
            return {"Ok": {"Index": dump_index(os.path.join(self.work_dir(upper), "index"), named)}}
        if name == "DumpLayer":
            self.unmounted("dumping a layer")
            return {"Ok": {"Layer": dump_layer(self.layer_dir(self.named(a["name"])))}}
        if name == "DumpMerged":
            if not self.mounted:
                raise usage("dumping the merged view needs a mount")
            return {"Ok": {"Merged": dump_merged()}}
        raise not_modelled("command %s" % name)

    def mount(self, lowers, upper, options):
        # Paths relative to the base directory keep a long stack of lowers inside the one
        # page of options that mount(2) copies.
        os.chdir(self.base)
        data = []
        if lowers:
            data.append("lowerdir=" + ":".join("l/%d" % self.named(n) for n in lowers))
        if upper is not None:
            u = self.named(upper)
            os.makedirs(self.work_dir(u), 0o755, exist_ok=True)
            data.append("upperdir=l/%d" % u)
            data.append("workdir=w/%d" % u)
        elif options.get("workdir_without_upper"):
            os.makedirs(os.path.join(self.base, "w", "stray"), 0o755, exist_ok=True)
            data.append("workdir=w/stray")
        data.extend(mount_options(options))
        flags = MS_NODEV | (MS_RDONLY if options.get("read_only") else 0)
        merged = os.path.join(self.base, "m")
        ctypes.set_errno(0)
        if LIBC.mount(b"overlay", b"m", b"overlay", flags, ",".join(data).encode()) != 0:
            return {"Ok": {"MountRefused": errno_name(ctypes.get_errno())}}
        # The merged root becomes the process root: every path resolves inside it.
        os.chroot(merged)
        os.chdir("/")
        self.mounted = True
        return {"Ok": "Done"}

    def unmount(self):
        os.fchdir(self.root_fd)
        os.chroot(".")
        self.mounted = False
        merged = os.path.join(self.base, "m").encode()
        if LIBC.umount2(merged, 0) != 0:
            code = ctypes.get_errno()
            LIBC.umount2(merged, 2)  # MNT_DETACH
            raise failed("umount: %s (detached it instead)" % os.strerror(code))

    def stop(self):
        if self.mounted:
            try:
                self.unmount()
            except Refusal:
                pass
        shutil.rmtree(self.base, ignore_errors=True)


def main(argv):
    out = sys.stdout
    if "--parent-pid" in argv:
        parent = int(argv[argv.index("--parent-pid") + 1])
        if os.getppid() != parent:
            sys.stderr.write("worker.py: the parent %d is gone\n" % parent)
            return 1
    try:
        worker = Worker()
    except OSError as e:
        send(out, {"Err": {"Failed": "setup: %s" % e}})
        return 1
    send(out, {PROTOCOL: VERSION, "worker": "examples/worker-python/worker.py"})
    for line in sys.stdin:
        try:
            reply = worker.exec(json.loads(line))
        except Refusal as r:
            reply = r.reply()
        except OSError as e:
            reply = {"Err": {"Failed": "%s" % e}}
        except (ValueError, KeyError, TypeError) as e:
            reply = {"Err": {"Failed": "the worker cannot read the command: %r" % e}}
        except Exception as e:  # noqa: BLE001 -- a bug here is a failed command, not a dead worker
            reply = {"Err": {"Failed": "the worker failed: %r" % e}}
        send(out, reply)
    worker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
