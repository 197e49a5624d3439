"""Field offsets of the running kernel's structs, from its own BTF.

Raw tracepoints hand their programs kernel pointers (a `struct task_struct *`), and
the kernel headers bcc compiles against may be of another kernel version, whose
layouts differ. /sys/kernel/btf/vmlinux describes the running kernel: offsets read
from it at load time are passed to the program as -D constants.
"""

from __future__ import annotations

import functools
import struct
from pathlib import Path

VMLINUX = Path("/sys/kernel/btf/vmlinux")
_MAGIC = 0xEB9F
_STRUCT, _UNION, _TYPEDEF, _FUNC_PROTO, _PTR = 4, 5, 8, 13, 2
# Bytes after the 12-byte common header, per kind: fixed part and per-vlen item.
_EXTRA = {1: (4, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 13: (0, 8), 14: (4, 0),
          15: (0, 12), 17: (4, 0), 19: (0, 12)}


class BtfError(Exception):
    pass


def _parse(data: bytes) -> tuple[dict[str, list[int]], list[tuple[int, int, int, bytes]], bytes]:
    """Struct/union/typedef names -> type ids, the types (kind, info, size_or_type, extra), strings."""
    magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
    if magic != _MAGIC:
        raise BtfError("not BTF")
    type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
    types_at, strings = hdr_len + type_off, data[hdr_len + str_off: hdr_len + str_off + str_len]
    types: list[tuple[int, int, int, bytes]] = [(0, 0, 0, b"")]  # id 0 is void
    by_name: dict[str, list[int]] = {}
    pos, end = types_at, types_at + type_len
    while pos < end:
        name_off, info, size = struct.unpack_from("<III", data, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        fixed, item = _EXTRA.get(kind, (0, 0))
        extra_len = fixed + item * vlen
        extra = data[pos + 12: pos + 12 + extra_len]
        if kind in (_STRUCT, _UNION, _TYPEDEF) and name_off:
            name = strings[name_off: strings.index(b"\0", name_off)].decode()
            by_name.setdefault(name, []).append(len(types))
        types.append((kind, info, size, extra))
        pos += 12 + extra_len
    return by_name, types, strings


class Btf:
    def __init__(self, path: Path = VMLINUX) -> None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BtfError(f"{path}: {exc.strerror}") from None
        self.by_name, self.types, self.strings = _parse(data)

    def _name(self, off: int) -> str:
        return self.strings[off: self.strings.index(b"\0", off)].decode()

    def _members(self, type_id: int) -> list[tuple[str, int, int]]:
        _, info, _, extra = self.types[type_id]
        bitfields = bool(info >> 31)
        out = []
        for i in range(info & 0xFFFF):
            name_off, mtype, offset = struct.unpack_from("<III", extra, 12 * i)
            bits = offset & 0xFFFFFF if bitfields else offset
            out.append((self._name(name_off) if name_off else "", mtype, bits))
        return out

    def _resolve(self, type_id: int) -> int:
        """Through typedefs and qualifiers to the struct or union."""
        while self.types[type_id][0] in (8, 9, 10, 11, 18):
            type_id = self.types[type_id][2]
        return type_id

    def offset(self, struct_name: str, *path: str) -> int:
        """Byte offset of struct_name.path[0].path[1]... (anonymous unions searched)."""
        ids = [i for i in self.by_name.get(struct_name, []) if self.types[i][0] != _TYPEDEF]
        if not ids:
            raise BtfError(f"no struct {struct_name}")
        type_id = max(ids, key=lambda i: len(self._members(i)))  # the full definition
        total = 0
        for field in path:
            found = self._find(type_id, field)
            if found is None:
                raise BtfError(f"no member {field} in {struct_name}")
            bits, type_id = found
            total += bits
        if total % 8:
            raise BtfError(f"{struct_name}.{'.'.join(path)} is a bitfield")
        return total // 8

    def _find(self, type_id: int, field: str) -> tuple[int, int] | None:
        for name, mtype, bits in self._members(type_id):
            inner = self._resolve(mtype)
            if name == field:
                return bits, inner
            if not name and self.types[inner][0] in (_STRUCT, _UNION):
                nested = self._find(inner, field)
                if nested is not None:
                    return bits + nested[0], nested[1]
        return None


    def raw_tracepoint_args(self, name: str) -> int | None:
        """Arguments a raw tracepoint hands its programs (btf_trace_NAME's prototype,
        less the leading `void *__data`), or None where the kernel has no such one."""
        for type_id in self.by_name.get(f"btf_trace_{name}", []):
            kind, _, target, _ = self.types[type_id]
            if kind != _TYPEDEF or self.types[target][0] != _PTR:
                continue
            proto = self.types[self.types[target][2]]
            if proto[0] == _FUNC_PROTO:
                return (proto[1] & 0xFFFF) - 1
        return None


def task_offsets(btf: Btf) -> dict[str, int]:
    """Where a task's pid, sleep state, CPU and run time live in this kernel's task_struct."""
    try:
        state = btf.offset("task_struct", "__state")  # 5.14+
    except BtfError:
        state = btf.offset("task_struct", "state")
    try:
        cpu = btf.offset("task_struct", "thread_info") + btf.offset("thread_info", "cpu")
    except BtfError:
        cpu = btf.offset("task_struct", "cpu")
    # se.sum_exec_runtime: the run time schedstat reports, with a vCPU's stolen time
    # left out (every scheduling class keeps it in se).
    return {"TASK_PID_OFF": btf.offset("task_struct", "pid"), "TASK_STATE_OFF": state,
            "TASK_CPU_OFF": cpu,
            "TASK_RUNTIME_OFF": btf.offset("task_struct", "se", "sum_exec_runtime")}


def sock_offsets(btf: Btf) -> dict[str, int]:
    """Where a socket's protocol, state, local port, peer port, family and peer addresses live."""
    common = btf.offset("sock", "__sk_common")

    def field(name: str) -> int:
        return common + btf.offset("sock_common", name)

    return {"SK_PROTOCOL_OFF": btf.offset("sock", "sk_protocol"), "SK_NUM_OFF": field("skc_num"),
            "SK_STATE_OFF": field("skc_state"),
            "SK_DPORT_OFF": field("skc_dport"), "SK_FAMILY_OFF": field("skc_family"),
            "SK_DADDR_OFF": field("skc_daddr"), "SK_V6_DADDR_OFF": field("skc_v6_daddr")}


@functools.cache
def running_kernel() -> Btf:
    """The running kernel's BTF, parsed once per process (~0.2 s): `top` asks whether
    it can leave connections out before it plans its probes, which asks again."""
    return Btf()
