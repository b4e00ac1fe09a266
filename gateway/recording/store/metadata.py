"""The embedded store's table metadata as ClickHouse keeps it on disk: where each database's
definitions are, and which of them chDB cannot parse (what a full disk leaves behind). Read
without opening the store: opening is what a damaged definition prevents."""

from __future__ import annotations

from pathlib import Path


def metadata_dirs(path: Path) -> dict[Path, str]:
    """Each database's metadata directory and its name (Atomic databases link
    `metadata/<db>` to `store/...`)."""
    out: dict[Path, str] = {}
    meta = path / "metadata"
    if meta.is_dir():
        for p in meta.iterdir():
            if p.is_dir():
                out[p.resolve()] = p.name
        out[meta.resolve()] = ""  # the databases' own definitions
    return out


def _damaged(f: Path) -> bool:
    try:
        text = f.read_text(errors="replace").strip()
    except OSError:
        return True
    return not text.startswith("ATTACH") or text.count("(") != text.count(")")


def damaged_files(path: str | Path) -> list[Path]:
    """Metadata files chDB cannot parse: empty, or not a whole `ATTACH` statement."""
    out = []
    for d in metadata_dirs(Path(path)):
        out += [f for f in sorted(d.glob("*.sql")) if _damaged(f)]
    return out


def damaged_message(path: str, files: list[Path]) -> str:
    names = ", ".join(str(f.relative_to(Path(path).resolve())) for f in files[:5])
    return (
        f"the embedded store at {path} cannot be opened: the table metadata in {names} is "
        "damaged (empty or cut short, as a full disk leaves it). Its rows are intact: with "
        "the gateway stopped, run `llm-gateway store repair` (with the same --config) to "
        "rebuild the definitions from the gateway's schema"
    )
