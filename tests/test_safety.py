"""safety: outputs never land on inputs, atomic paddle saves, deferred signals, OSError naming."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from gamma_kit.safety import atomic_save_paddle, check_output_path, check_writable, deferred_interrupts, with_path


def test_output_on_or_inside_an_input_is_refused(tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    gt = data / "gt.xlsx"
    gt.write_bytes(b"x")
    for out in (gt, data / "images", data / "images" / "pred.csv", data / "images" / ".." / "gt.xlsx"):
        with pytest.raises(ValueError, match=r"is, or lies inside, the input"):
            check_output_path(out, [gt, data / "images", None], "--out")
    (tmp_path / "link").symlink_to(data / "images")
    with pytest.raises(ValueError, match="lies inside"):
        check_output_path(tmp_path / "link" / "x.csv", [data / "images"])
    os.link(gt, tmp_path / "hard.xlsx")                                  # a hard link is the same file
    with pytest.raises(ValueError, match="lies inside"):
        check_output_path(tmp_path / "hard.xlsx", [gt])
    assert check_output_path(tmp_path / "out" / "sub.csv", [gt, data / "images"]) == tmp_path / "out" / "sub.csv"
    assert gt.read_bytes() == b"x"


def test_unwritable_locations(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("")
    with pytest.raises(ValueError, match="a_file is a file, not a folder"):
        check_writable(f / "out" / "x.csv", "--out")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.geteuid() == 0:
            assert check_writable(ro / "x.csv") == ro / "x.csv"            # root may write there: correct
        else:
            with pytest.raises(ValueError, match="cannot write in .*ro"):
                check_writable(ro / "x.csv")
    finally:
        ro.chmod(0o755)


def test_with_path_keeps_errno_and_names_the_file():
    exc = with_path(OSError(errno.ENOSPC, "No space left on device", "/out/.best.pdparams.abc.tmp"), "/out/best.pdparams")
    assert exc.errno == errno.ENOSPC and exc.filename == "/out/best.pdparams"
    assert isinstance(with_path(OSError(errno.EACCES, "Permission denied"), "p"), PermissionError)
    assert "p: boom" in str(with_path(OSError("boom"), "p"))


def test_atomic_save_paddle_round_trip_and_failure_keeps_old_file(tmp_path, monkeypatch):
    import paddle

    path = tmp_path / "best.pdparams"
    atomic_save_paddle({"w": paddle.ones([3])}, path)
    assert paddle.load(str(path))["w"].numpy().tolist() == [1.0, 1.0, 1.0]
    old = path.read_bytes()

    def half_then_full(obj, p, *a, **k):
        with open(p, "wb") as fh:
            fh.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(paddle, "save", half_then_full)
    with pytest.raises(OSError) as info:
        atomic_save_paddle({"w": paddle.zeros([3])}, path)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert path.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ["best.pdparams"]


def test_deferred_interrupts_finish_the_block_then_raise():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("write finished")
    assert done == ["write finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler      # handlers restored
    with deferred_interrupts():                                              # nothing arrives: no raise
        pass


def test_nested_deferred_interrupts_raise_only_after_the_outer_block(tmp_path):
    """A signal during one atomic save of a set waits until the whole set is written."""
    written = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            with deferred_interrupts():
                os.kill(os.getpid(), signal.SIGTERM)
                written.append("first file")
            written.append("second file")      # the inner block did not raise
    assert written == ["first file", "second file"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_during_a_cli_is_one_line_and_130(tmp_path):
    script = textwrap.dedent("""
        import sys, time
        from gamma_kit.cli import run_cli
        from gamma_kit.safety import deferred_interrupts
        def body():
            with deferred_interrupts():
                print("saving", flush=True)
                time.sleep(1.0)
                open(sys.argv[1], "w").write("complete")
            time.sleep(30)
        sys.exit(run_cli(body))
    """)
    out = tmp_path / "ckpt"
    p = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline() == "saving\n"
    p.send_signal(signal.SIGTERM)                                            # during the write
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and err == "interrupted (Ctrl-C or SIGTERM)\n"
    assert out.read_text() == "complete"                                     # the write was finished first


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    import os
    import stat

    from gamma_kit.safety import atomic_write_text

    mask = os.umask(0)
    os.umask(mask)
    p = atomic_write_text(tmp_path / "a.txt", "x")
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask != 0o600      # not mkstemp's private mode


def test_write_behind_writes_in_order_and_bounds_what_waits():
    """Writes run in the order given, on one other thread; submit waits once `depth` are pending."""
    import threading

    from gamma_kit.safety import WriteBehind

    gate, done, threads, blocked = threading.Event(), [], set(), [None]

    def write(k):
        gate.wait(5)
        threads.add(threading.current_thread().name)
        done.append(k)

    with WriteBehind(depth=2) as w:
        w.submit(write, 0)
        w.submit(write, 1)
        t = threading.Thread(target=w.submit, args=(write, 2))
        t.start()
        t.join(0.3)
        blocked[0] = t.is_alive()        # the third waits: two are pending and the gate is shut
        gate.set()
        t.join(5)
        for k in range(3, 8):
            w.submit(write, k)
    assert blocked[0] is True
    assert done == list(range(8))                                  # all written, in order, before the block ended
    assert len(threads) == 1 and threading.current_thread().name not in threads


def test_write_behind_raises_a_failed_write_in_the_caller_and_drops_the_rest_on_an_error():
    from gamma_kit.safety import WriteBehind

    def fail():
        raise OSError(28, "No space left on device")

    w = WriteBehind(depth=1)
    w.submit(fail)
    with pytest.raises(OSError, match="No space left"):
        w.submit(lambda: None)                  # the earlier write's error, at the next hand-over
    w.close()
    with pytest.raises(OSError, match="No space left"):
        with WriteBehind(depth=4) as w2:
            w2.submit(fail)                     # raised when the block ends
    import threading
    started, written = threading.Event(), []

    def slow(k):
        started.set()
        threading.Event().wait(0.3)
        written.append(k)

    with pytest.raises(KeyboardInterrupt):
        with WriteBehind(depth=4) as w3:
            w3.submit(slow, 0)
            w3.submit(slow, 1)
            started.wait(5)
            raise KeyboardInterrupt              # Ctrl-C: the running write finishes, the waiting one is dropped
    assert written == [0]
