"""Hostile files (issue 17 item 2): flipped, truncated and empty checkpoints, damaged toy cell files and snapshot
PNGs are one-line UserInputErrors naming the file -- never a silent resume, an EOFError or a crash after all
remaining steps. Checkpoints, JSON and PNGs are written atomically."""
from __future__ import annotations

import argparse
import random
from pathlib import Path

import pytest
import torch
from test_image_pipeline import _cfg, standin_factory

from msdfast.checkpoint import load_checkpoint, save_checkpoint
from msdfast.errors import UserInputError
from msdfast.pipelines.image import distill_image


def _one_line(e: pytest.ExceptionInfo, name: str) -> None:
    msg = str(e.value)
    assert "\n" not in msg and name in msg, msg


# ---------------------------------------------------------------------- checkpoint file format (API)
def _state() -> dict:
    g = torch.Generator().manual_seed(1)
    return {"w": torch.randn(64, 64, generator=g), "step": 7, "history": [{"loss": 0.5}], "rng": g.get_state()}


def test_checkpoint_roundtrip_is_exact(tmp_path: Path) -> None:
    st = _state()
    save_checkpoint(st, tmp_path / "c.pt")
    back = load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(back["w"], st["w"]) and back["step"] == 7 and torch.equal(back["rng"], st["rng"])
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]   # no temporary file left behind
    # still a plain weights_only torch file
    assert torch.load(tmp_path / "c.pt", weights_only=True)["format"] == "msdfast-checkpoint"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flipped_payload_bytes_are_detected(tmp_path: Path, seed: int) -> None:
    p = tmp_path / "checkpoint.pt"
    save_checkpoint(_state(), p)
    raw = bytearray(p.read_bytes())
    payload = torch.load(p, weights_only=True)["payload"].numpy().tobytes()
    start = bytes(raw).find(payload)
    assert start > 0   # torch stores tensor data uncompressed: the payload is in the file as is
    rnd = random.Random(seed)
    for i in rnd.sample(range(len(payload)), 20):   # the 20 flipped bytes
        raw[start + i] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(UserInputError) as e:
        load_checkpoint(p)
    _one_line(e, str(p))


@pytest.mark.parametrize("seed", range(8))
def test_a_flipped_byte_anywhere_is_detected_or_harmless(tmp_path: Path, seed: int) -> None:
    p = tmp_path / "checkpoint.pt"
    st = _state()
    save_checkpoint(st, p)
    raw = bytearray(p.read_bytes())
    raw[random.Random(seed).randrange(len(raw))] ^= 0x01
    p.write_bytes(bytes(raw))
    try:
        back = load_checkpoint(p)
    except UserInputError as e:
        assert str(p) in str(e) and "\n" not in str(e)
    else:   # the flip hit bytes torch ignores (zip metadata): the state must be exactly the saved one
        assert torch.equal(back["w"], st["w"]) and back["step"] == st["step"]


@pytest.mark.parametrize("keep", [0, 1, 100, 0.5, -1])
def test_truncated_or_empty_checkpoint(tmp_path: Path, keep: float) -> None:
    p = tmp_path / "checkpoint.pt"
    save_checkpoint(_state(), p)
    raw = p.read_bytes()
    n = int(len(raw) * keep) if isinstance(keep, float) else (len(raw) + keep if keep < 0 else keep)
    p.write_bytes(raw[:n])
    with pytest.raises(UserInputError) as e:
        load_checkpoint(p)
    _one_line(e, str(p))


def test_a_foreign_torch_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    p = tmp_path / "checkpoint.pt"
    torch.save({"field": {}, "step": 3}, p)   # an unchecksummed (older or foreign) checkpoint
    with pytest.raises(UserInputError, match="checksum") as e:
        load_checkpoint(p)
    _one_line(e, str(p))


# ---------------------------------------------------------------------- run folders (image pipeline, API)
def _interrupted(den, out: Path) -> None:  # noqa: ANN001
    distill_image(_cfg(out), denoiser=den, estimator_factory=standin_factory, stop_after=2)


def test_resume_with_a_flipped_checkpoint_is_refused(den, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "run"
    _interrupted(den, out)
    ck = out / "checkpoint.pt"
    raw = bytearray(ck.read_bytes())
    payload = torch.load(ck, weights_only=True)["payload"].numpy().tobytes()
    start = bytes(raw).find(payload)
    for i in random.Random(0).sample(range(len(payload)), 20):
        raw[start + i] ^= 0xFF
    ck.write_bytes(bytes(raw))
    with pytest.raises(UserInputError) as e:
        distill_image(_cfg(out), denoiser=den, estimator_factory=standin_factory, resume=True)
    _one_line(e, str(ck))
    assert not (out / "final.png").exists()


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_resume_with_a_damaged_checkpoint_is_refused(den, tmp_path: Path, damage: str) -> None:  # noqa: ANN001
    out = tmp_path / "run"
    _interrupted(den, out)
    ck = out / "checkpoint.pt"
    ck.write_bytes(b"" if damage == "empty" else ck.read_bytes()[: ck.stat().st_size // 2])
    with pytest.raises(UserInputError) as e:
        distill_image(_cfg(out), denoiser=den, estimator_factory=standin_factory, resume=True)
    _one_line(e, str(ck))


def test_a_truncated_snapshot_is_reported_before_the_remaining_steps(den, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "run"
    _interrupted(den, out)
    snap = sorted((out / "snapshots").glob("step_*.png"))[0]
    snap.write_bytes(snap.read_bytes()[:40])
    calls = []

    def factory(method, d, **o):  # noqa: ANN001, ANN202
        est = standin_factory(method, d, **o)
        calls.append(est)
        return est
    with pytest.raises(UserInputError) as e:
        distill_image(_cfg(out), denoiser=den, estimator_factory=factory, resume=True)
    _one_line(e, str(snap))
    assert calls[0].calls == 0   # refused before any remaining step ran


def test_run_folder_has_no_temporary_files(den, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "run"
    distill_image(_cfg(out), denoiser=den, estimator_factory=standin_factory)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------- toy cell files
def _toy_args(out: Path, *extra: str) -> argparse.Namespace:
    from msdfast.toy.study import add_toy_arguments
    p = argparse.ArgumentParser()
    add_toy_arguments(p)
    return p.parse_args(["--grid", "3", "--steps", "2", "--methods", "sds", "--n-data", "200", "--no-efficiency",
                         "--no-landscape", "--no-progress", "--figure-resolution", "8", "--out", str(out), *extra])


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from msdfast.toy import study
    out = tmp_path_factory.mktemp("toy") / "out"
    assert study.run_toy(_toy_args(out)) == 0
    return out


@pytest.mark.parametrize("suffix,damage", [("json", "empty"), ("json", "truncated"), ("json", "flip"),
                                           ("npz", "empty"), ("npz", "truncated"), ("npz", "flip")])
def test_damaged_toy_cell_files(toy_run: Path, tmp_path: Path, suffix: str, damage: str) -> None:
    import shutil

    from msdfast.toy import study
    out = tmp_path / "out"
    shutil.copytree(toy_run, out)
    f = next((out / "cells").glob(f"cell--*.{suffix}"))
    raw = bytearray(f.read_bytes())
    if damage == "empty":
        raw = bytearray()
    elif damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:
        raw[len(raw) // 2] ^= 0x20   # in a JSON: a character changes (valid or not); in the npz: the data
    f.write_bytes(bytes(raw))
    with pytest.raises(UserInputError) as e:   # the JSON carries its own sha256 and its companions'
        study.run_toy(_toy_args(out, "--resume"))
    _one_line(e, str(f) if suffix == "npz" else f.name)
