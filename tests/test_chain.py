"""fsstore/chain.py: the chain's key, its MAC and the values that anchor a chain."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest

import fsstore
from fsstore import chain
from fsstore.chain import ChainKey, Mac

KEY = bytes(range(32))
KEY_HEX = KEY.hex()


def test_the_key_id_is_the_first_8_bytes_of_an_hmac_of_a_fixed_message():
    expected = hmac.new(KEY, b"fsstore key id", hashlib.sha256).digest()[:8].hex()
    assert ChainKey(KEY).key_id == expected == Mac(KEY).key_id
    assert len(expected) == 16
    assert ChainKey(bytes(32)).key_id != expected


def test_a_key_shorter_than_32_bytes_or_longer_than_64_is_refused():
    for size in (0, 16, 31, 65):
        with pytest.raises(fsstore.InvalidSetting, match=f"{size} bytes"):
            ChainKey(b"k" * size)
    assert ChainKey(b"k" * 64).key_id
    with pytest.raises(fsstore.InvalidSetting, match="bytes, not str"):
        ChainKey("k" * 32)  # type: ignore[arg-type]


def test_the_repr_of_a_key_shows_its_id_never_the_key():
    key = ChainKey(KEY)
    assert KEY_HEX not in repr(key) and key.key_id in repr(key)
    assert key == ChainKey(bytes(KEY)) and key != ChainKey(bytes(32))
    assert key.key_id in repr(key.mac()) and "hmac-sha256" in repr(key.mac())


def test_the_key_comes_from_the_environment_as_hex_or_a_file(tmp_path):
    assert ChainKey.from_env({}) is None
    assert ChainKey.from_env({"FSSTORE_CHAIN_KEY": KEY_HEX}) == ChainKey(KEY)
    assert ChainKey.from_env({"FSSTORE_CHAIN_KEY": KEY_HEX.upper() + "\n"}) == ChainKey(KEY)
    path = tmp_path / "chain.key"
    path.write_text(KEY_HEX + "\n")
    assert ChainKey.from_env({"FSSTORE_CHAIN_KEY_FILE": str(path)}) == ChainKey(KEY)
    assert ChainKey.from_file(str(path)) == ChainKey(KEY)


def test_a_key_that_is_not_hex_or_too_short_names_where_it_came_from(tmp_path):
    with pytest.raises(fsstore.InvalidSetting, match="FSSTORE_CHAIN_KEY is not a chain key"):
        ChainKey.from_env({"FSSTORE_CHAIN_KEY": "not hex"})
    with pytest.raises(fsstore.InvalidSetting, match="FSSTORE_CHAIN_KEY: .*16 bytes"):
        ChainKey.from_env({"FSSTORE_CHAIN_KEY": "ab" * 16})
    path = tmp_path / "chain.key"
    path.write_bytes(os.urandom(32))  # raw bytes: a key file holds hex
    with pytest.raises(fsstore.InvalidSetting, match=f"chain key file {path}"):
        ChainKey.from_file(str(path))
    path.write_text("ab" * 3000)
    with pytest.raises(fsstore.InvalidSetting, match="larger than a key"):
        ChainKey.from_file(str(path))
    with pytest.raises(FileNotFoundError):
        ChainKey.from_file(str(tmp_path / "missing"))


def test_both_variables_set_is_refused():
    with pytest.raises(fsstore.InvalidSetting, match="set one"):
        ChainKey.from_env({"FSSTORE_CHAIN_KEY": KEY_HEX, "FSSTORE_CHAIN_KEY_FILE": "/k"})


def test_a_key_file_inside_the_store_is_refused_even_through_a_symlink(tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    inside = root / "chain.key"
    inside.write_text(KEY_HEX)
    outside = tmp_path / "chain.key"
    outside.write_text(KEY_HEX)
    link = tmp_path / "link.key"
    link.symlink_to(inside)
    for path in (inside, link):
        with pytest.raises(fsstore.InvalidSetting, match="inside the store"):
            ChainKey.from_file(str(path), store_root=str(root))
        with pytest.raises(fsstore.InvalidSetting, match="inside the store"):
            ChainKey.from_env({"FSSTORE_CHAIN_KEY_FILE": str(path)}, store_root=str(root))
    # the store reached through a symlink is the same store
    (tmp_path / "alias").symlink_to(root)
    with pytest.raises(fsstore.InvalidSetting, match="inside the store"):
        ChainKey.from_file(str(inside), store_root=str(tmp_path / "alias"))
    assert ChainKey.from_file(str(outside), store_root=str(root)) == ChainKey(KEY)
    # a key file beside the store, its name starting like the store's, is outside it
    beside = tmp_path / "store.key"
    beside.write_text(KEY_HEX)
    assert ChainKey.from_file(str(beside), store_root=str(root)) == ChainKey(KEY)
    # a symlink to a key outside the store is followed
    (tmp_path / "to-outside").symlink_to(outside)
    assert ChainKey.from_file(str(tmp_path / "to-outside"), store_root=str(root)).key_id


def test_unkeyed_is_sha256_and_keyed_is_hmac_sha256_of_the_tag_and_the_parts():
    tag = chain.DOM_GENESIS
    assert Mac().value(tag, b"ab", b"c") == hashlib.sha256(tag + b"abc").digest()
    for key in (KEY, b"k" * 64, bytes(33)):
        assert (Mac(key).value(tag, b"ab", b"c")
                == hmac.new(key, tag + b"abc", "sha256").digest())
    assert (Mac().alg, Mac(KEY).alg) == ("sha256", "hmac-sha256")
    assert not Mac().keyed and Mac(KEY).keyed and Mac().key_id is None


def test_domain_tags_are_16_bytes_and_distinct_so_no_value_stands_for_another():
    assert all(len(tag) == 16 for tag in chain.DOMAINS)
    assert len(set(chain.DOMAINS)) == len(chain.DOMAINS)
    mac = Mac()
    values = {mac.value(tag, b"same input") for tag in chain.DOMAINS}
    assert len(values) == len(chain.DOMAINS)
    with pytest.raises(ValueError):
        mac.start(b"short")


@pytest.mark.parametrize("key", [None, KEY])
def test_a_frame_state_copied_gives_each_prefix_its_own_value(key):
    mac = Mac(key)
    state = mac.frame_state()
    values = []
    data = [b"first frame", b"second", b"third one"]
    for part in data:
        state.update(part)
        values.append(state.copy().digest())
    for index, value in enumerate(values):
        prefix = chain.DOM_FRAME + b"".join(data[:index + 1])
        assert value == mac.value(chain.DOM_FRAME, prefix[16:])
        assert value == (hashlib.sha256(prefix).digest() if key is None
                         else hmac.new(key, prefix, "sha256").digest())
    # a state taken later starts from the tag again
    assert mac.frame_state().digest() == mac.value(chain.DOM_FRAME)


@pytest.mark.parametrize("key", [None, KEY])
def test_genesis_binds_the_uid_and_the_log_start(key):
    mac = Mac(key)
    base = chain.genesis(mac, 7, 1)
    assert len(base) == chain.CHAIN_SIZE
    assert base != chain.genesis(mac, 8, 1) != chain.genesis(mac, 7, 2)
    assert base == mac.value(chain.DOM_GENESIS, (7).to_bytes(8, "little"),
                             (1).to_bytes(8, "little"))
    assert base != chain.genesis(Mac(None if key else KEY), 7, 1)


@pytest.mark.parametrize("key", [None, KEY])
def test_a_junction_binds_the_parents_link_the_forks_uid_and_seq(key):
    mac = Mac(key)
    link = chain.genesis(mac, 7, 1)
    value = chain.junction(mac, link, 9, 40)
    assert value not in {chain.junction(mac, link, 10, 40), chain.junction(mac, link, 9, 41),
                         chain.junction(mac, bytes(32), 9, 40), link}
    with pytest.raises(ValueError):
        chain.junction(mac, b"short", 9, 40)


def test_a_keyed_chain_needs_its_own_key():
    key = ChainKey(KEY)
    assert not chain.mac_for("sha256", None, None).keyed
    assert not chain.mac_for("sha256", None, key).keyed
    assert chain.mac_for("hmac-sha256", key.key_id, key).key_id == key.key_id
    with pytest.raises(fsstore.ChainKeyRequired, match=key.key_id) as required:
        chain.mac_for("hmac-sha256", key.key_id, None)
    assert isinstance(required.value, PermissionError)
    other = ChainKey(bytes(32))
    with pytest.raises(fsstore.ChainKeyMismatch) as mismatch:
        chain.mac_for("hmac-sha256", key.key_id, other)
    assert key.key_id in str(mismatch.value) and other.key_id in str(mismatch.value)
    with pytest.raises(ValueError, match="no chain algorithm"):
        chain.mac_for("blake3", None, None)
