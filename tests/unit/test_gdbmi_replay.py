"""The MI layer on real recordings of gdb 13 talking to QEMU 7.2 (made by
tests/data/record.py): tokens, async records that arrive before a result,
gdb errors, the target going away, timeouts and a gdb that exits."""
from __future__ import annotations

from pathlib import Path

import pytest
from pygdbmi.gdbmiparser import parse_response

from harness.gdbmi import (GdbDied, GdbError, MiError, MiSession, MiTimeout, ReplayTransport,
                           _drop_acks, _parse_memory_result)

MI = Path(__file__).resolve().parents[1] / "data" / "mi"


def replay(name: str, tmp_path: Path | None = None, text: str | None = None) -> MiSession:
    path = MI / name
    if text is not None:
        path = tmp_path / name
        path.write_text(text)
    return MiSession(transport=ReplayTransport(path))


def to_first_stop(gdb: MiSession) -> None:
    """The commands session.mi opens with, up to the stop at stub_ready."""
    gdb.connect("localhost:1234")
    gdb.command('-file-exec-and-symbols "stub/stub.elf"')
    gdb.break_at("stub_ready")
    gdb.continue_until_stop(5)


def test_whole_session():
    with replay("session.mi") as gdb:
        attach = gdb.connect("localhost:1234")
        # *stopped arrived before ^connected and is handed back, not lost.
        assert attach["frame"]["addr"] == "0x0000fff0"
        assert [n["message"] for n in gdb.notifications][:3] == [
            "thread-group-added", "cmd-param-changed", "cmd-param-changed"]
        gdb.command('-file-exec-and-symbols "stub/stub.elf"')
        assert gdb.break_at("stub_ready") == 1
        stop = gdb.continue_until_stop(5)
        assert stop["reason"] == "breakpoint-hit" and stop["frame"]["func"] == "stub_ready"
        assert any(n["message"] == "breakpoint-modified" for n in gdb.notifications)
        assert gdb.registers(["cr0", "cr3", "cr4", "efer", "eip"]) == {
            "cr0": 0x11, "cr3": 0, "cr4": 0, "efer": 0, "eip": 0x100012}
        assert gdb.symbol_address("exit_request") == 0x10004C
        mem = gdb.read_physical(0x100000, 64)
        assert mem[:4] == (0x1BADB002).to_bytes(4, "little") and len(mem) == 64
        assert gdb.monitor("info status") == "VM status: paused (debug)\n"
        with pytest.raises(GdbError) as err:
            gdb.evaluate("no_such_symbol")
        assert err.value.msg.startswith("No symbol table is loaded")
        assert "no_such_symbol" in str(err.value)
        gdb.write_memory(gdb.symbol_address("exit_request"), (3).to_bytes(4, "little"))
        assert gdb.continue_until_stop(5)["reason"] == "exited"


def test_stop_that_arrives_before_another_commands_result():
    with replay("running.mi") as gdb:
        gdb.connect("localhost:1234")
        gdb.command('-file-exec-and-symbols "stub/stub.elf"')
        gdb.break_at("spin")
        assert gdb.command("-exec-continue")["message"] == "running"
        # gdb held this answer until the target stopped: *stopped came first.
        names = gdb.command("-data-list-register-names")["payload"]["register-names"]
        assert names[8] == "eip"
        stop = gdb.wait_for_stop(0.5)
        assert stop["reason"] == "breakpoint-hit" and stop["frame"]["func"] == "spin"
        assert gdb.registers(["eip"]) == {"eip": 0x100013}


def test_timeout_quotes_the_command_and_the_transcript(tmp_path):
    text = (MI / "session.mi").read_text().replace("< 7^done,value=\"1048652\"", "< (gdb) ")
    with replay("cut.mi", tmp_path, text) as gdb:
        to_first_stop(gdb)
        gdb.registers(["cr0", "cr3", "cr4", "efer", "eip"])
        with pytest.raises(MiTimeout) as err:
            gdb.command('-data-evaluate-expression "(unsigned long)&exit_request"', timeout=0.3)
    msg = str(err.value)
    assert msg.startswith('no answer from gdb to `-data-evaluate-expression "(unsigned long)&exit_request"`')
    assert "> 7-data-evaluate-expression" in msg


def test_gdb_that_exits_mid_session(tmp_path):
    lines = (MI / "session.mi").read_text().splitlines()
    cut = next(i for i, ln in enumerate(lines) if "> 6-data-list-register-values" in ln)
    with replay("dies.mi", tmp_path, "\n".join(lines[:cut + 1]) + "\n") as gdb:
        to_first_stop(gdb)
        with pytest.raises(GdbDied) as err:
            gdb.registers(["cr0", "cr3", "cr4", "efer", "eip"])
    assert str(err.value).startswith("gdb exited")


def test_replay_refuses_a_different_command():
    with replay("session.mi") as gdb:
        with pytest.raises(MiError, match="was '1-target-select remote"):
            gdb.command("-gdb-version")


def test_memory_result_fast_path_matches_pygdbmi():
    line = next(ln.split(" < ", 1)[1] for ln in (MI / "session.mi").read_text().splitlines()
                if "^done,memory=" in ln)
    assert _parse_memory_result(line) == parse_response(line)
    assert _parse_memory_result('5^done,value="1"') is None


def test_relay_drops_acks_only_between_packets():
    state = [0]
    assert _drop_acks(b"+$qSupported:multiprocess+;xml+#a1+", state) == b"$qSupported:multiprocess+;xml+#a1"
    # A packet split across reads, checksum included.
    state = [0]
    parts = [b"+$m10", b"0,8", b"#4", b"f+", b"+\x03"]
    assert b"".join(_drop_acks(p, state) for p in parts) == b"$m100,8#4f\x03"


@pytest.mark.parametrize("words", ["Remote connection closed",
                                   "Remote communication error.  Target disconnected.: Broken pipe."])
def test_target_that_vanishes_while_running_is_an_exit(tmp_path, words):
    """A triple fault with -no-reboot ends QEMU while the guest runs; gdb says so
    in either wording, and neither must wait out the timeout as "did not stop"."""
    text = (MI / "session.mi").read_text().replace(
        '&"Remote connection closed\\n"', '&"' + words + '\\n"')
    with replay("gone.mi", tmp_path, text) as gdb:
        to_first_stop(gdb)
        gdb.registers(["cr0", "cr3", "cr4", "efer", "eip"])
        gdb.symbol_address("exit_request")
        gdb.read_physical(0x100000, 64)
        gdb.monitor("info status")
        with pytest.raises(GdbError):
            gdb.evaluate("no_such_symbol")
        gdb.write_memory(gdb.symbol_address("exit_request"), (3).to_bytes(4, "little"))
        stop = gdb.continue_until_stop(0.5)
    assert stop["reason"] == "exited" and words.startswith(stop["detail"])
