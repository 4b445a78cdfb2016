from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fsstore
from fsstore import CorruptionError, FileIO, FormatVersionError, InvalidMetadata, manifest


def test_manifest_is_stable_json_with_a_trailing_newline(tmp_path):
    path = str(tmp_path / "m.json")
    manifest.write(FileIO(), path, {"version": "1.0", "format": "x", "b": 1, "a": [1, 2]})
    text = (tmp_path / "m.json").read_text()
    assert text.endswith("}\n")
    assert text.index('"a"') < text.index('"b"') < text.index('"format"')
    assert manifest.read(FileIO(), path, "x")["a"] == [1, 2]


def test_same_major_newer_minor_is_read_and_unknown_keys_kept(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"format": "x", "version": "1.9", "future": {"k": 1}}))
    assert manifest.read(FileIO(), str(path), "x")["future"] == {"k": 1}


def test_newer_major_is_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"format": "x", "version": "2.0"}))
    with pytest.raises(FormatVersionError, match="upgrade fsstore"):
        manifest.read(FileIO(), str(path), "x")


@pytest.mark.parametrize("content", [
    b"", b"{", b"\xff\xfe", b"[]", b'{"format": "y", "version": "1.0"}',
    b'{"format": "x", "version": "one"}', b'{"format": "x"}',
    b'{"format": "x", "version": "1.0", "n": ' + b"1" * 5000 + b"}",
])
def test_damaged_manifest_is_a_corruption_error_naming_the_file(tmp_path, content):
    path = tmp_path / "m.json"
    path.write_bytes(content)
    with pytest.raises(CorruptionError) as caught:
        manifest.read(FileIO(), str(path), "x")
    assert caught.value.path == str(path)


def test_oversized_manifest_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "m.json"
    path.write_bytes(b" " * (manifest.MAX_MANIFEST_BYTES + 1))
    with pytest.raises(CorruptionError, match="more than"):
        manifest.read(FileIO(), str(path), "x")


@pytest.mark.parametrize("depth", [manifest.MAX_DEPTH + 1, 100_000])
def test_deeply_nested_manifest_is_a_corruption_error(tmp_path, depth):
    path = tmp_path / "m.json"
    path.write_text('{"format": "x", "version": "1.0", "deep": ' + "[" * depth + "]" * depth
                    + "}")
    with pytest.raises(CorruptionError, match="nested") as caught:
        manifest.read(FileIO(), str(path), "x")
    assert caught.value.path == str(path)


def test_nesting_up_to_the_limit_is_read(tmp_path):
    path = tmp_path / "m.json"
    depth = manifest.MAX_DEPTH - 1
    path.write_text('{"format": "x", "version": "1.0", "deep": ' + "[" * depth + "]" * depth
                    + "}")
    assert manifest.read(FileIO(), str(path), "x")["format"] == "x"


def _session_store(tmp_path, chain=None):
    store = fsstore.open_store(tmp_path / "s", chain=chain)
    store.create_session("a", title="t", tags=["x"], metadata={"k": 1}).close()
    return store, os.path.join(store.path, "sessions", "a", "session.json")


def _edit(path, change):
    with open(path) as handle:
        data = json.load(handle)
    change(data)
    with open(path, "w") as handle:
        json.dump(data, handle)


@pytest.mark.parametrize("field, change", [
    ("tags", lambda d: d.update(tags=5)),
    ("tags[0]", lambda d: d.update(tags=[1])),
    ("metadata", lambda d: d.update(metadata="x")),
    ("metadata", lambda d: d.update(metadata=[1])),
    ("title", lambda d: d.update(title=7)),
    ("created", lambda d: d.update(created=5)),
    ("updated", lambda d: d.update(updated="yesterday")),
    ("metadata_seq", lambda d: d.update(metadata_seq="x")),
    ("parent", lambda d: d.update(parent=[1])),
    ("parent.seq", lambda d: d.update(parent={"id": "b", "seq": "x"})),
    ("parent.seq", lambda d: d.update(parent={"id": "b", "seq": -1})),
    ("parent.id", lambda d: d.update(parent={"id": "../../etc", "seq": 1})),
    ("parent.id", lambda d: d.update(parent={"seq": 1})),
])
def test_wrong_typed_session_manifest_fields_are_corruption_naming_file_and_field(
        tmp_path, field, change):
    store, path = _session_store(tmp_path)
    _edit(path, change)
    with pytest.raises(CorruptionError) as caught:
        reader = store.read_session("a")
        reader.info(), reader.tags, reader.metadata, reader.parent
    assert caught.value.path == path and field in str(caught.value)
    with pytest.raises(CorruptionError):
        store.open_session("a")


@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_unknown_session_manifest_fields_are_kept_when_it_is_rewritten(tmp_path, chain):
    from chained_forge import edit_manifest

    store, path = _session_store(tmp_path, chain)
    # chained: its chain.mac recomputed, as a writer of the newer minor would
    edit_manifest(store, "a", lambda d: d.update(
        sidecar="u-1", later={"deep": [1, 2]}, version="1.9" if not chain else "2.9",
        parent={"id": "b", "seq": 3, "sidecar": "u-0"}))
    with store.open_session("a") as session:
        assert session.parent == fsstore.ForkOrigin("b", 3, None)
        session.update_metadata(title="new")
        session.save_session_with_updates([{"x": 1}], tags=["y"])
    with open(path) as handle:
        data = json.load(handle)
    assert data["sidecar"] == "u-1" and data["later"] == {"deep": [1, 2]}
    assert data["parent"]["sidecar"] == "u-0" and data["title"] == "new" and data["tags"] == ["y"]


@pytest.mark.parametrize("value", [
    float("nan"), float("inf"), {1: "a"}, {"a": {b"k": 1}}, {"a": b"x"}, {"a": {1, 2}},
    {"a": object()}, {"a": 2**64}, {"a": -(2**63) - 1}, {"a": "\ud800"}, {"\udfff": 1},
])
def test_encode_refuses_what_json_cannot_give_back_equal(value):
    with pytest.raises(InvalidMetadata):
        manifest.encode({"format": "x", "version": "1.0", "v": value})


def test_encode_refuses_nesting_a_reader_would_refuse():
    deep: object = 1
    for _ in range(manifest.MAX_DEPTH):
        deep = [deep]
    with pytest.raises(InvalidMetadata, match="nested"):
        manifest.encode({"format": "x", "version": "1.0", "v": deep})
    shallow = deep[0]  # type: ignore[index]
    assert manifest.loads(manifest.encode({"v": shallow}), "m")["v"] == shallow


def test_encode_refuses_a_manifest_over_the_size_a_reader_reads():
    with pytest.raises(InvalidMetadata, match="bytes"):
        manifest.encode({"format": "x", "version": "1.0",
                         "v": "x" * manifest.MAX_MANIFEST_BYTES})


@pytest.mark.parametrize("call", ["create", "update", "save"])
def test_metadata_over_the_manifest_limit_is_refused_and_nothing_is_written(tmp_path, call):
    from conftest import tree_snapshot

    store, _ = _session_store(tmp_path)
    big = {"blob": "x" * manifest.MAX_MANIFEST_BYTES}
    before = tree_snapshot(store.path)
    with pytest.raises(InvalidMetadata, match="bytes"):
        if call == "create":
            store.create_session("b", metadata=big)
        else:
            with store.open_session("a") as session:
                before = tree_snapshot(store.path)
                if call == "update":
                    session.update_metadata(metadata=big)
                else:
                    session.save_session_with_updates([{"x": 1}], metadata=big)
    assert tree_snapshot(store.path) == before
    assert [info.id for info in store.list_sessions()] == ["a"]
    assert store.read_session("a").metadata == {"k": 1}


@pytest.mark.parametrize("options", [
    {"tags": "ab"}, {"tags": 5}, {"tags": [1]}, {"metadata": "x"}, {"metadata": [1]},
    {"title": 5}, {"title": "\ud800"}, {"metadata": {"k": float("nan")}},
    {"metadata": {1: "a"}},
])
def test_metadata_a_reader_would_refuse_is_refused_at_create(tmp_path, options):
    store = fsstore.open_store(tmp_path / "s")
    with pytest.raises(InvalidMetadata):
        store.create_session("a", **options)
    assert store.session_ids() == []


def test_a_deeply_nested_store_manifest_is_a_corruption_error_at_open(tmp_path):
    store = fsstore.open_store(tmp_path / "s")
    path = os.path.join(store.path, "fsstore.json")
    with open(path, "w") as handle:
        handle.write('{"format": "fsstore-store", "version": "1.2", "x": '
                     + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(CorruptionError) as caught:
        fsstore.open_store(store.path, create=False)
    assert caught.value.path == path


def test_a_store_manifest_keeps_unknown_keys_and_reads_a_newer_minor(tmp_path):
    store = fsstore.open_store(tmp_path / "s")
    path = os.path.join(store.path, "fsstore.json")
    with open(path, "w") as handle:
        json.dump({"format": "fsstore-store", "version": "1.7", "uid": "u"}, handle)
    assert fsstore.open_store(store.path, create=False).path == store.path


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=5) | st.sampled_from(["2026-11-21T05:52:12+00:00", "a"]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["id", "seq", "checkpoint", "x"]) | st.text(max_size=3),
                      children, max_size=3),
    max_leaves=8)
KNOWN_FIELDS = ["id", "created", "updated", "title", "tags", "metadata", "metadata_seq",
                "parent", "parent.id", "parent.seq", "parent.checkpoint", "parent.forked",
                "version"]


def test_any_json_in_a_known_session_field_reads_typed_or_is_corruption(tmp_path):
    store = fsstore.open_store(tmp_path / "s")
    store.create_session("a").close()
    path = os.path.join(store.path, "sessions", "a", "session.json")
    with open(path) as handle:
        original = handle.read()

    @settings(max_examples=150, deadline=None)
    @given(edits=st.lists(st.tuples(st.sampled_from(KNOWN_FIELDS), json_values), min_size=1,
                          max_size=3))
    def check(edits):
        def change(data):
            for field, value in edits:
                if field.startswith("parent."):
                    if not isinstance(data.get("parent"), dict):
                        data["parent"] = {"id": "b", "seq": 1}
                    data["parent"][field[7:]] = value
                else:
                    data[field] = value
        with open(path, "w") as handle:
            handle.write(original)
        _edit(path, change)
        try:
            info = store.read_session("a").info()
        except (CorruptionError, FormatVersionError):
            return
        assert info.title is None or isinstance(info.title, str)
        assert all(isinstance(tag, str) for tag in info.tags)
        assert isinstance(info.metadata, dict) and all(isinstance(k, str) for k in info.metadata)
        assert isinstance(info.created, float) and isinstance(info.updated, float)
        if info.parent is not None:
            assert isinstance(info.parent.parent, str) and isinstance(info.parent.seq, int)
            assert info.parent.checkpoint is None or isinstance(info.parent.checkpoint, str)
    check()


@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_a_metadata_record_a_manifest_cannot_hold_is_not_rolled_forward(tmp_path, chain):
    from chained_forge import append_chained
    from forge import append_raw

    store, path = _session_store(tmp_path, chain)
    append = append_chained if chain else append_raw
    append(store, "a", [("fsstore.metadata", {"title": "t", "tags": 5, "metadata": {}})])
    with open(path, "rb") as handle:
        before = handle.read()
    with pytest.raises(CorruptionError, match="fsstore.metadata record at seq 1"):
        store.open_session("a")
    with open(path, "rb") as handle:
        assert handle.read() == before
    assert store.read_session("a").tags == ["x"]


@pytest.mark.parametrize("chain", [False, True], ids=["unchained", "chained"])
def test_a_metadata_record_is_rolled_forward_when_it_is_sound(tmp_path, chain):
    from chained_forge import append_chained
    from forge import append_raw

    store, path = _session_store(tmp_path, chain)
    append = append_chained if chain else append_raw
    append(store, "a", [("fsstore.metadata",
                         {"title": "new", "tags": ["y"], "metadata": {"k": 2}})])
    store.open_session("a").close()
    reader = store.read_session("a")
    assert (reader.title, reader.tags, reader.metadata) == ("new", ["y"], {"k": 2})


@pytest.mark.parametrize("edit, reason", [
    (lambda text: text.replace('"tags": []', '"tags": [], "title": "again"'), "twice"),
    (lambda text: text.replace('"metadata": {}', '"metadata": {"x": {"a": 1, "a": 2}}'),
     "twice"),
])
def test_a_manifest_no_writer_makes_is_damage_reported_not_half_read(tmp_path, edit, reason):
    # A key given twice would be read as its last value, and lost at the next rewrite.
    store = fsstore.open_store(tmp_path / "s")
    store.create_session("s").close()
    path = os.path.join(store.path, "sessions", "s", "session.json")
    with open(path) as handle:
        text = handle.read()
    assert edit(text) != text
    with open(path, "w") as handle:
        handle.write(edit(text))
    with pytest.raises(CorruptionError, match=reason):
        store.read_session("s")
    assert any(f.level == "problem" and f.path == path for f in store.verify())
