from __future__ import annotations

import json

import pytest

from fsstore import CorruptionError, FileIO, FormatVersionError, manifest


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
