from genrep.core.progress import progress_bar, track


def test_track_yields_everything_with_and_without_bars(monkeypatch):
    monkeypatch.setenv("GENREP_NO_PROGRESS", "0")
    assert list(track(range(5), "shown")) == [0, 1, 2, 3, 4]
    monkeypatch.setenv("GENREP_NO_PROGRESS", "1")
    assert list(track(iter(range(3)), "hidden")) == [0, 1, 2]


def test_progress_bar_advances(monkeypatch):
    monkeypatch.setenv("GENREP_NO_PROGRESS", "0")
    with progress_bar(4, "steps") as bar:
        for _ in range(4):
            bar.advance()
            bar.status("loss 0.1")
        task = bar._progress.tasks[0]
        assert task.completed == 4 and task.fields["status"] == "loss 0.1"
