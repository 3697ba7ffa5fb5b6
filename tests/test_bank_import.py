"""Hash list parsers and exporters: formats, line-numbered errors, exact round trips."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schoolgate.banks.formats import (
    BankImportError,
    dumps,
    export_csv,
    export_hex_list,
    export_signal_table,
    export_te_file,
    export_vpdq,
    import_file,
    parse_csv,
    parse_hex_list,
    parse_mapping,
    parse_signal_table,
    parse_te_file,
    parse_vpdq,
    read_signals,
)
from schoolgate.banks.model import BankError, SignalInput, SignalType
from schoolgate.banks.store import BankStore

PDQ_A = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
PDQ_B = "30a10efd71cc3d429013d48d0ffffc52e34e0e17ada952a9d29685211ea9e5af"
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
MD5 = "098f6bcd4621d373cade4e832627b4f6"


def lines(text: str) -> list[str]:
    return io.StringIO(text).readlines()


def test_hex_list_with_comments_quality_and_upper_case() -> None:
    text = f"# a list\n\n{PDQ_A.upper()},90\n  {PDQ_B}  # trailing comment\n"
    assert list(parse_hex_list(lines(text), SignalType.PDQ)) == [
        SignalInput(SignalType.PDQ, PDQ_A, 90),
        SignalInput(SignalType.PDQ, PDQ_B),
    ]


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        (f"{SHA}\nnot-a-hash\n", 2, "expected 64 hex digits"),
        (f"# c\n\n{SHA},high\n", 3, "quality must be an integer"),
        (f"{SHA},101\n", 1, "invalid quality"),
        (f"{MD5}\n", 1, "expected 64 hex digits"),
    ],
)
def test_hex_list_errors_name_the_line(text: str, line: int, problem: str) -> None:
    with pytest.raises(BankImportError, match=problem) as info:
        list(parse_hex_list(lines(text), SignalType.SHA256))
    assert info.value.line == line
    assert f"line {line}" in str(info.value)


def test_csv_with_mapping() -> None:
    text = f"id,hash,kind,q,comment\n1,{SHA},sha256,,first\n2,{PDQ_A},PDQ,77,\n3,{MD5},md5,,x\n"
    assert list(parse_csv(lines(text), "value=hash,type=kind,quality=q,note=comment")) == [
        SignalInput(SignalType.SHA256, SHA, None, "first"),
        SignalInput(SignalType.PDQ, PDQ_A, 77, ""),
        SignalInput(SignalType.MD5, MD5, None, "x"),
    ]
    fixed = list(parse_csv(lines(f"h\n{MD5}\n"), {"value": "h"}, SignalType.MD5))
    assert fixed == [SignalInput(SignalType.MD5, MD5)]


def test_csv_errors() -> None:
    with pytest.raises(BankImportError, match=r"missing column\(s\) \['kind'\]"):
        list(parse_csv(lines(f"hash\n{SHA}\n"), "value=hash,type=kind"))
    with pytest.raises(BankImportError, match="line 3: unknown signal type 'url'"):
        list(parse_csv(lines(f"h,t\n{SHA},sha256\nhttp://x,url\n"), "value=h,type=t"))
    with pytest.raises(BankError, match="type column"):
        list(parse_csv(lines("h\n"), "value=h"))
    for bad in ("hash", "value=", "colour=c", "type=t"):
        with pytest.raises(BankError, match="column mapping"):
            parse_mapping(bad)


def test_vpdq_frames() -> None:
    text = f"0,100,{PDQ_A},0.000\n1,87,{PDQ_B},1.001\n"
    frames = list(parse_vpdq(lines(text), content_id="clip.mp4"))
    assert frames == [
        SignalInput(SignalType.VPDQ, PDQ_A, 100, "", "clip.mp4", 0, 0.0),
        SignalInput(SignalType.VPDQ, PDQ_B, 87, "", "clip.mp4", 1, 1.001),
    ]
    with pytest.raises(BankImportError, match="line 2: expected frame_number"):
        list(parse_vpdq(lines(f"0,100,{PDQ_A},0\n1,100,{PDQ_A}\n"), "v"))
    with pytest.raises(BankImportError, match="line 1: timestamp must be a number"):
        list(parse_vpdq(lines(f"0,100,{PDQ_A},soon\n"), "v"))
    with pytest.raises(BankError, match="content id"):
        list(parse_vpdq(lines(""), ""))


def test_threatexchange_dataset_csv() -> None:
    """The layout `threatexchange dataset -P --csv` prints."""
    text = (
        "collab,signal_type,signal_str,category,tags\n"
        f"Sample Data,pdq,{PDQ_A},POSITIVE_CLASS,tag1 tag2\n"
        f"Sample Data,video_md5,{MD5},INVESTIGATION_SEED,\n"
        f"Sample Data,pdq,{PDQ_B},NEGATIVE_CLASS,\n"
        "Sample Data,url,http://example.com,POSITIVE_CLASS,\n"
    )
    skipped: list[tuple[int, str]] = []
    found = list(
        parse_signal_table(
            lines(text), skip_unsupported=True, on_skip=lambda n, why: skipped.append((n, why))
        )
    )
    assert found == [
        SignalInput(SignalType.PDQ, PDQ_A, None, "tag1 tag2"),
        SignalInput(SignalType.MD5, MD5, None, ""),
    ]
    assert [n for n, _ in skipped] == [4, 5]
    assert "not harmful" in skipped[0][1]
    with pytest.raises(BankImportError, match="line 5: unknown signal type 'url'"):
        list(parse_signal_table(lines(text)))


def test_hma_tsv() -> None:
    text = f"signal_type\tsignal\tnote\npdq\t{PDQ_A}\tcase 7\nmd5\t{MD5}\t\n"
    assert list(parse_signal_table(lines(text))) == [
        SignalInput(SignalType.PDQ, PDQ_A, None, "case 7"),
        SignalInput(SignalType.MD5, MD5),
    ]
    with pytest.raises(BankImportError, match="line 1: expected signal_type and signal"):
        list(parse_signal_table(lines("type,hash\n")))


def test_te_local_file() -> None:
    text = f"pdq {PDQ_A}\nvideo_md5 {MD5}\n\n"
    assert list(parse_te_file(lines(text))) == [
        SignalInput(SignalType.PDQ, PDQ_A),
        SignalInput(SignalType.MD5, MD5),
    ]
    assert list(parse_te_file(lines(f"{SHA}\n"), SignalType.SHA256)) == [
        SignalInput(SignalType.SHA256, SHA)
    ]
    with pytest.raises(BankImportError, match="line 1: unknown signal type"):
        list(parse_te_file(lines(f"{PDQ_A}\n")))


# -- round trips ---------------------------------------------------------------------------------

hex_bytes = st.binary(min_size=32, max_size=32).map(bytes.hex)
qualities = st.one_of(st.none(), st.integers(0, 100))
notes = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(hex_bytes, qualities), max_size=30))
def test_hex_list_round_trip(rows: list[tuple[str, int | None]]) -> None:
    signals = [SignalInput(SignalType.PDQ, v, q) for v, q in rows]
    assert list(parse_hex_list(lines(dumps(export_hex_list, signals)), SignalType.PDQ)) == signals


@st.composite
def typed_signals(draw: st.DrawFn) -> SignalInput:
    signal_type = draw(st.sampled_from([SignalType.SHA256, SignalType.MD5, SignalType.SHA1]))
    size = {SignalType.SHA256: 32, SignalType.MD5: 16, SignalType.SHA1: 20}[signal_type]
    value = draw(st.binary(min_size=size, max_size=size)).hex()
    return SignalInput(signal_type, value, draw(qualities), draw(notes))


@settings(max_examples=40, deadline=None)
@given(st.lists(typed_signals(), max_size=20))
def test_csv_and_signal_table_round_trips(signals: list[SignalInput]) -> None:
    mapping = "value=h,type=t,quality=q,note=n"
    assert (
        list(parse_csv(lines(dumps(lambda s, o: export_csv(s, o, mapping), signals)), mapping))
        == signals
    )
    for delimiter in (",", "\t"):
        buffer = io.StringIO()
        export_signal_table(signals, buffer, delimiter, "schoolgate")
        text = buffer.getvalue()
        assert list(parse_signal_table(lines(text))) == signals
    typed = [SignalInput(s.signal_type, s.value) for s in signals]
    assert list(parse_te_file(lines(dumps(export_te_file, typed)))) == typed


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            hex_bytes,
            st.integers(0, 100),
            # Timestamps are written to the millisecond, as the reference writes them.
            st.floats(0, 1e6, allow_nan=False).map(lambda t: round(t, 3)),
        ),
        max_size=30,
    )
)
def test_vpdq_round_trip(rows: list[tuple[str, int, float]]) -> None:
    frames = [
        SignalInput(SignalType.VPDQ, v, q, "", "video", i, ts) for i, (v, q, ts) in enumerate(rows)
    ]
    assert list(parse_vpdq(lines(dumps(export_vpdq, frames)), "video")) == frames


def test_round_trip_through_the_store(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    signals = [
        SignalInput(SignalType.PDQ, bytes(row).hex(), int(q), f"n{i}")
        for i, (row, q) in enumerate(
            zip(
                rng.integers(0, 256, (50, 32), dtype=np.uint8),
                rng.integers(0, 101, 50),
                strict=True,
            )
        )
    ]
    path = tmp_path / "list.tsv"
    path.write_text(dumps(lambda s, o: export_signal_table(s, o, "\t"), signals))
    store = BankStore(tmp_path / "b.db")
    store.create_bank("b")
    assert import_file(store, "b", path, "signal-table") == 50
    stored = list(store.iter_signals("b"))
    assert list(parse_signal_table(lines(dumps(export_signal_table, stored)))) == signals
    assert stored[0].source == f"signal-table:{path}"


def test_import_file_errors_name_file_and_line(tmp_path: Path) -> None:
    store = BankStore(tmp_path / "b.db")
    store.create_bank("b")
    path = tmp_path / "list.txt"
    path.write_text(f"{SHA}\n{SHA[:-1]}\n")
    with pytest.raises(BankImportError, match=r"list\.txt: line 2: invalid sha256"):
        import_file(store, "b", path, "hex", signal_type=SignalType.SHA256)
    assert store.bank("b").counts == {}  # nothing half-imported
    with pytest.raises(BankError, match="cannot read"):
        import_file(store, "b", tmp_path / "missing.txt", "hex", signal_type=SignalType.SHA256)
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(BankError, match="not UTF-8"):
        import_file(store, "b", path, "hex", signal_type=SignalType.SHA256)
    with pytest.raises(BankError, match="needs its signal type"):
        list(read_signals([], "hex"))
    with pytest.raises(BankError, match="unknown import format"):
        list(read_signals([], "xml"))


def test_import_vpdq_file_uses_file_name_as_content_id(tmp_path: Path) -> None:
    store = BankStore(tmp_path / "b.db")
    store.create_bank("videos")
    path = tmp_path / "clip.vpdq"
    path.write_text(f"0,100,{PDQ_A},0.000\n1,100,{PDQ_A},1.000\n")
    assert import_file(store, "videos", path, "vpdq") == 2
    stored = list(store.iter_signals("videos"))
    assert {s.content_id for s in stored} == {"clip.vpdq"}
    assert dumps(export_vpdq, stored) == path.read_text()
