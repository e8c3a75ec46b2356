"""Raw-file pruning: only files whose every block is shipped go, dry run first, all logged."""

from __future__ import annotations

from pathlib import Path

from flows.synthetic import em_like, write_slice_folder
from tasks.grid import block_grid
from tasks.ledger import Ledger
from tasks.pruning import prune_raw_files
from tasks.volumes import open_volume, resolve_source

BLOCK = (4, 64, 64)


def _ship(ledger: Ledger, block_id: str) -> None:
    ledger.claim("w", block_ids=[block_id])
    for state in ("encoded", "verified", "shipped"):
        ledger.advance(block_id, "w", state)
    ledger.release(block_id, "w")


def test_raw_slices_go_only_when_every_block_using_them_is_shipped(tmp_path: Path) -> None:
    folder = tmp_path / "acq"
    write_slice_folder(em_like((8, 64, 128), seed=2), folder)
    volume = open_volume(resolve_source(folder, name="vol"))
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.discover(block_grid("vol", volume.shape, BLOCK))
        for block_id in ("vol/z0000_y0000_x0000", "vol/z0000_y0000_x0064", "vol/z0004_y0000_x0000"):
            _ship(ledger, block_id)
        dry = prune_raw_files(ledger, volume, BLOCK, dry_run=True)
        assert [p.name for p in dry.files] == [f"slice_{z:05d}.tif" for z in range(4)]
        assert dry.kept == 4  # slices 4-7 still feed the unshipped block z0004_y0000_x0064
        assert all(p.exists() for p in dry.files)
        done = prune_raw_files(ledger, volume, BLOCK, dry_run=False)
        assert done.files == dry.files and not any(p.exists() for p in done.files)
        assert sorted(p.name for p in folder.iterdir()) == [f"slice_{z:05d}.tif" for z in range(4, 8)]
        notes = [e["detail"] for e in ledger.events("vol/z0000_y0000_x0000") if e["detail"]]
        assert any("would delete" in n for n in notes) and any(n.startswith("raw file deleted") for n in notes)
