"""The event schema is defined once: header, dtype and Parquet columns agree."""

from __future__ import annotations

import numpy as np

from herdtrace import schema


def test_committed_header_is_generated_from_schema() -> None:
    assert schema.HEADER_PATH.read_text() == schema.c_header(), "run `make schema`"


def test_dtype_has_no_padding_and_matches_declared_types() -> None:
    sizes = {"u64": 8, "u32": 4, "s32": 4, "u16": 2, "u8": 1, "u8[16]": 16, "char[16]": 16, "u8[2]": 2}
    offset = 0
    fields = schema.EVENT_DTYPE.fields
    assert fields is not None
    for f in schema.FIELDS:
        dt, off = fields[f.name][:2]
        assert off == offset, f.name
        assert dt.itemsize == sizes[f.ctype], f.name
        offset += sizes[f.ctype]
    assert offset == schema.EVENT_SIZE == 128
    assert schema.EVENT_SIZE % 8 == 0


def test_arrow_columns_follow_fields() -> None:
    arrow = schema.arrow_schema()
    assert arrow.names == [f.name for f in schema.STORED_FIELDS]
    assert str(arrow.field("raddr").type) == "fixed_size_binary[16]"
    assert str(arrow.field("ret").type) == "int32"


def test_header_declares_every_enum_value() -> None:
    header = schema.c_header()
    for kind in schema.Kind:
        assert f"#define HERD_KIND_{kind.name} {int(kind)}" in header
    for outcome in schema.Outcome:
        assert f"#define HERD_OUTCOME_{outcome.name} {int(outcome)}" in header
    assert "struct herd_event {" in header


def test_syscall_numbers_name_traced_syscalls() -> None:
    traced = {name for name, *_ in schema.LINUX_WAIT_SYSCALLS}
    for numbers in schema.SYSCALL_NUMBERS.values():
        assert set(numbers.values()) <= traced


def test_round_trip_bytes_through_dtype() -> None:
    ev = np.zeros(2, dtype=schema.EVENT_DTYPE)
    ev["tid"] = [7, 8]
    ev["ret"] = [-11, 5]
    ev["comm"] = [b"nginx", b"worker"]
    back = np.frombuffer(ev.tobytes(), dtype=schema.EVENT_DTYPE)
    assert back["tid"].tolist() == [7, 8]
    assert back["ret"].tolist() == [-11, 5]
    assert back["comm"][1] == b"worker"
