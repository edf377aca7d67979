"""The command line's process-level effects stay inside a call of main()."""

import gc
import weakref

from getdiff.cli import main


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_main_leaves_garbage_collection_as_it_found_it(tmp_path):
    cycle = _Cycle()
    ref = weakref.ref(cycle)
    args = ["prepare", "--config", str(tmp_path / "absent.yaml"), "--cell-type", "x"]
    assert main([*args, "--outdir", str(tmp_path / "out")]) == 2
    assert gc.get_freeze_count() == 0
    assert gc.isenabled()
    del cycle
    gc.collect()
    assert ref() is None  # not kept frozen past the call


def test_main_keeps_garbage_collection_off_when_the_caller_turned_it_off(tmp_path):
    gc.disable()
    try:
        args = ["prepare", "--config", str(tmp_path / "absent.yaml"), "--cell-type", "x"]
        main([*args, "--outdir", str(tmp_path / "out")])
        assert not gc.isenabled()
    finally:
        gc.enable()
