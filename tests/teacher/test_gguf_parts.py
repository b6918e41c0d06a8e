"""Assembly of GGUF files split across PyPI packages: order, checksums, clear errors."""

import hashlib
import importlib.util

import pytest

from teacher.convert import PARTED
from teacher.gguf_parts import PartedGGUF, PartError, assemble


def _parts(tmp_path, chunks):
    paths = []
    for n, data in enumerate(chunks, 1):
        p = tmp_path / f"part{n:02d}.bin"
        p.write_bytes(data)
        paths.append(p)
    src = PartedGGUF(dist="fake-model-part{n}", version="1.0", sha256=hashlib.sha256(b"".join(chunks)).hexdigest(),
                     upstream="test", license="Apache-2.0",
                     parts=tuple((hashlib.sha256(c).hexdigest(), len(c)) for c in chunks))
    return src, paths


def test_parts_are_concatenated_in_order(tmp_path):
    chunks = [b"GGUF" + b"a" * 100, b"b" * 50, b"c" * 7]
    src, paths = _parts(tmp_path, chunks)
    out = assemble(src, tmp_path / "out" / "m.gguf", paths)
    assert out.read_bytes() == b"".join(chunks)
    assert not list((tmp_path / "out").glob("*.partial"))


def test_a_corrupt_part_names_its_package_and_leaves_nothing(tmp_path):
    src, paths = _parts(tmp_path, [b"GGUF1234", b"5678"])
    paths[1].write_bytes(b"5679")
    with pytest.raises(PartError, match=r"fake-model-part2==1.0 is corrupt.*--force-reinstall fake-model-part2==1.0"):
        assemble(src, tmp_path / "m.gguf", paths)
    assert not (tmp_path / "m.gguf").exists() and not (tmp_path / "m.gguf.partial").exists()


def test_parts_in_the_wrong_order_are_refused(tmp_path):
    src, paths = _parts(tmp_path, [b"GGUF1234", b"5678"])
    with pytest.raises(PartError, match="fake-model-part1==1.0 is corrupt"):
        assemble(src, tmp_path / "m.gguf", paths[::-1])


def test_a_whole_file_checksum_mismatch_is_refused(tmp_path):
    src, paths = _parts(tmp_path, [b"GGUF1234", b"5678"])
    bad = PartedGGUF(**{**src.__dict__, "sha256": "0" * 64})
    with pytest.raises(PartError, match="assembled from fake-model-part\\*==1.0 has sha256"):
        assemble(bad, tmp_path / "m.gguf", paths)


def test_a_missing_package_names_itself_and_the_fix():
    src = PartedGGUF(dist="no-such-model-part{n}", version="9.9", sha256="0" * 64, upstream="x", license="x",
                     parts=(("0" * 64, 1),))
    with pytest.raises(PartError, match=r"package no-such-model-part1==9.9 is not installed; run `make setup`"):
        src.part_path(1)


@pytest.mark.parametrize("model", sorted(PARTED))
def test_pinned_parts_are_installed_and_match_requirements(model):
    """Every pinned part is in requirements/models.txt at its version, and installed where it is
    checked (the full checksum is verified by `make models`)."""
    from tests.conftest import ROOT

    src = PARTED[model]
    pins = set((ROOT / "requirements" / "models.txt").read_text().split())
    for n in range(1, len(src.parts) + 1):
        assert f"{src.package(n)}=={src.version}" in pins
        if importlib.util.find_spec(src.package(n).replace("-", "_")) is not None:
            assert src.part_path(n).stat().st_size == src.parts[n - 1][1]
    assert src.size() == sum(s for _, s in src.parts) and src.license == "Apache-2.0"


def test_make_models_stops_with_one_line_naming_the_package(monkeypatch, tmp_path, capsys):
    from teacher import convert

    missing = PartedGGUF(dist="no-such-qwen-part{n}", version="0.2.0", sha256="0" * 64, upstream="x",
                         license="Apache-2.0", parts=(("0" * 64, 1),))
    monkeypatch.setattr(convert, "MODELS_DIR", tmp_path)  # nothing built yet: no reuse
    monkeypatch.setitem(convert.PARTED, "qwen2.5-coder-0.5b", missing)
    assert convert.main(["qwen2.5-coder-0.5b"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: qwen2.5-coder-0.5b: package no-such-qwen-part1==0.2.0 is not installed; run `make setup` "
                   "(it installs requirements/models.txt)"]
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("running, starts", [
    ([], "qwen2.5-coder-1.5b"),  # one alone always runs
    (["qwen2.5-coder-1.5b"], "qwen2.5-coder-0.5b"),  # 11.2 + 4.0 GiB fit in 24 GiB
    (["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"], None),  # two cores: no third worker
    (["qwen2.5-coder-0.5b"], "gemma3-270m"),
])
def test_conversions_start_side_by_side_as_their_measured_peaks_fit(running, starts):
    from teacher import convert

    need = convert.CONVERSION_GIB
    budget = 24 - convert.SPARE_GIB
    can = [t for t in convert.CONVERSION_GIB if t not in running and convert.fits([need[r] for r in running], need[t], 2, budget)]
    assert (starts in can) if starts else not can


def test_on_16_gib_the_two_qwen_conversions_take_turns():
    from teacher import convert

    need = convert.CONVERSION_GIB
    assert not convert.fits([need["qwen2.5-coder-1.5b"]], need["qwen2.5-coder-0.5b"], 2, 16 - convert.SPARE_GIB)
    assert convert.fits([], need["qwen2.5-coder-1.5b"], 2, 8.0)  # alone, even past the budget
