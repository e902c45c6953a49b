"""msdfast.content_hash: equal content <=> equal hash, independent of where the folder lives."""
from __future__ import annotations

import shutil

import pytest

from msdfast.content_hash import content_hash, file_digest, hash_bytes


def _tree(root):
    (root / "unet").mkdir(parents=True)
    (root / "unet" / "w.bin").write_bytes(b"\x00\x01" * 100)
    (root / "model_index.json").write_text("{}")
    return root


def test_same_content_same_hash_anywhere(tmp_path):
    a = _tree(tmp_path / "a")
    b = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, b)
    assert content_hash(a) == content_hash(b)
    assert len(content_hash(a)) == 64


@pytest.mark.parametrize("edit", ["byte", "add", "rename", "remove"])
def test_any_change_changes_the_hash(tmp_path, edit):
    a = _tree(tmp_path / "a")
    h0 = content_hash(a)
    w = a / "unet" / "w.bin"
    if edit == "byte":   # same size, one byte flipped (a same-size fine-tune must not collide)
        data = bytearray(w.read_bytes())
        data[7] ^= 1
        w.write_bytes(bytes(data))
    elif edit == "add":
        (a / "unet" / "extra.bin").write_bytes(b"x")
    elif edit == "rename":
        w.rename(a / "unet" / "w2.bin")
    else:
        w.unlink()
    assert content_hash(a) != h0


def test_hidden_and_excluded_entries_skipped(tmp_path):
    a = _tree(tmp_path / "a")
    h0 = content_hash(a)
    (a / ".cache").mkdir()
    (a / ".cache" / "junk").write_text("junk")
    (a / "cache").mkdir()
    (a / "cache" / "junk").write_text("junk")
    assert content_hash(a) != h0   # "cache" is not hidden
    assert content_hash(a, exclude=["cache"]) == h0
    assert content_hash(a, include_hidden=True, exclude=["cache"]) != h0


def test_file_and_parts(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    assert file_digest(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256("abc")
    assert hash_bytes("ab", "c") != hash_bytes("a", "bc")
    with pytest.raises(FileNotFoundError, match="nope"):
        content_hash(tmp_path / "nope")
