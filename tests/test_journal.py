"""Journal segments on replay: framing and checksums, torn tails, chunked payloads."""

from __future__ import annotations

import zlib
from pathlib import Path

from engine.store.journal import encode_record, iter_segment_payloads, read_segment


def _line(payload: bytes) -> bytes:
    return b"%08x " % zlib.crc32(payload) + payload + b"\n"


def _segment(path: Path) -> None:
    bad_crc = bytearray(encode_record({"row_id": 90}))
    bad_crc[12] ^= 0x01
    path.write_bytes(
        encode_record({"row_id": 0, "task": "é"})
        + bytes(bad_crc)
        + b"\n"  # too short to be a record
        + b"zzzzzzzz {}\n"  # checksum not hex
        + encode_record({"row_id": 1})
        + _line(b'{"row_id": 91, "task": "cut')  # good checksum, bad JSON
        + encode_record({"row_id": 2})
        + encode_record({"row_id": 92})[:-1]  # torn tail: no newline
    )


def test_read_segment_drops_torn_and_corrupt_lines(tmp_path: Path) -> None:
    seg = tmp_path / "seg-00000.log"
    _segment(seg)
    records, dropped = read_segment(seg)
    assert records == [{"row_id": 0, "task": "é"}, {"row_id": 1}, {"row_id": 2}]
    assert dropped == 5


def test_payload_chunks_check_framing_and_checksum_only(tmp_path: Path) -> None:
    seg = tmp_path / "seg-00000.log"
    _segment(seg)
    chunks = list(iter_segment_payloads(seg, 2))
    assert chunks == [
        ['{"row_id":0,"task":"é"}'.encode(), b'{"row_id":1}'],
        [b'{"row_id": 91, "task": "cut', b'{"row_id":2}'],  # JSON is left to the caller
    ]
    assert list(iter_segment_payloads(seg, 10)) == [[p for c in chunks for p in c]]
