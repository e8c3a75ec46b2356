"""Raw-file pruning: only files whose every block is shipped go, dry run first, all logged."""

from __future__ import annotations

from pathlib import Path

from flows.synthetic import em_like, write_slice_folder
from tasks.edge.pruning import prune_raw_files
from tasks.source.grid import block_grid
from tasks.source.volumes import Volume, open_volume, resolve_source
from tasks.store.checksums import array_sha256
from tasks.store.ledger import Ledger

BLOCK = (4, 64, 64)


def _ship(ledger: Ledger, block_id: str, volume: Volume) -> None:
    """Mark a block shipped with the sha256 of its data as it is now (what pruning checks again)."""
    [record] = ledger.claim("w", block_ids=[block_id])
    ledger.advance(block_id, "w", "encoded", raw_sha256=array_sha256(volume.read(record.block.bounds)))
    for state in ("verified", "shipped"):
        ledger.advance(block_id, "w", state)
    ledger.release(block_id, "w")


def test_raw_slices_go_only_when_every_block_using_them_is_shipped(tmp_path: Path) -> None:
    folder = tmp_path / "acq"
    write_slice_folder(em_like((8, 64, 128), seed=2), folder)
    volume = open_volume(resolve_source(folder, name="vol"))
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.discover(block_grid("vol", volume.shape, BLOCK))
        for block_id in ("vol/z0000_y0000_x0000", "vol/z0000_y0000_x0064", "vol/z0004_y0000_x0000"):
            _ship(ledger, block_id, volume)
        dry = prune_raw_files(ledger, volume, BLOCK, dry_run=True)
        assert [p.name for p in dry.files] == [f"slice_{z:05d}.tif" for z in range(4)]
        assert dry.kept == 4  # slices 4-7 still feed the unshipped block z0004_y0000_x0064
        assert all(p.exists() for p in dry.files)
        done = prune_raw_files(ledger, volume, BLOCK, dry_run=False)
        assert done.files == dry.files and not any(p.exists() for p in done.files)
        left = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))  # not the acquisition id
        assert left == [f"slice_{z:05d}.tif" for z in range(4, 8)]
        notes = [e["detail"] for e in ledger.events("vol/z0000_y0000_x0000") if e["detail"]]
        assert any("would delete" in n for n in notes) and any(n.startswith("raw file deleted") for n in notes)


def test_raw_files_whose_data_is_not_what_was_shipped_are_kept(tmp_path: Path) -> None:
    """A folder written again under the same name: its blocks look shipped, its data is new."""
    folder = tmp_path / "acq"
    write_slice_folder(em_like((4, 64, 64), seed=2), folder)
    volume = open_volume(resolve_source(folder, name="vol"))
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.discover(block_grid("vol", volume.shape, BLOCK))
        _ship(ledger, "vol/z0000_y0000_x0000", volume)
        write_slice_folder(em_like((4, 64, 64), seed=3), folder)  # new data, same file names
        result = prune_raw_files(ledger, open_volume(resolve_source(folder, name="vol")), BLOCK, dry_run=False)
        assert result.files == [] and len([p for p in folder.glob("*.tif")]) == 4
        notes = [e["detail"] for e in ledger.events("vol/z0000_y0000_x0000") if e["detail"]]
        assert any("differs from what was shipped" in n for n in notes)
