"""Locks on a file or a folder itself: they exclude each other and leave nothing behind."""

from __future__ import annotations

import threading
import time

from comfyui_gendeg.core.locks import locked_file, locked_folder


def _serialised(lock_factory) -> list[str]:  # noqa: ANN001
    """Two threads take the lock; the second must wait until the first is done."""
    events: list[str] = []
    first_in = threading.Event()

    def first() -> None:
        with lock_factory():
            first_in.set()
            time.sleep(0.3)
            events.append("first done")

    def second() -> None:
        first_in.wait(5)
        with lock_factory():
            events.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return events


def test_folder_lock_excludes_and_leaves_no_file(tmp_path):
    folder = tmp_path / "dataset"
    assert _serialised(lambda: locked_folder(folder)) == ["first done", "second in"]
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_file_lock_excludes_and_leaves_no_file(tmp_path):
    path = tmp_path / "report.csv"

    class Locked:
        def __enter__(self):
            self.fh = open(path, "a+")  # noqa: SIM115 - closed in __exit__
            self.cm = locked_file(self.fh)
            self.cm.__enter__()

        def __exit__(self, *exc):
            self.cm.__exit__(*exc)
            self.fh.close()

    assert _serialised(Locked) == ["first done", "second in"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.csv"]
