"""The Redis password stays secret (issue 16 item 7), and refusals are reported as such.

- The URL comes from ``--redis-file`` or ``L2FAST_REDIS_URL_FILE`` / ``L2FAST_REDIS_URL``;
  ``--redis`` with a password is refused (exit 2) naming those.
- Every URL shown is masked: ``redacted_url``, errors, ``WorkerOptions``' repr,
  ``RedisTransport.url``.
- On a real redis-server with a password, the four Redis commands run as processes with
  the password from a file or the environment, and it appears in no output, no log and
  no ``/proc/<pid>/cmdline``; with a wrong password each exits with code 4 within
  seconds saying the authentication failed (before: retried as "unreachable").
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import pickle
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("redis")

from redis import exceptions as redis_errors
from secure_redis import REPO, SecureRedis, secret_file
from support import BUS_KEY, exit_code, write_csv

from l2fast.bus.redis import RedisRetry, RedisTransport, redacted_url, refusal
from l2fast.bus.worker import WorkerOptions
from l2fast.cli.main import EXIT_REDIS_REFUSED, _redis_url
from l2fast.errors import BusAuthError

PASSWORD = "pw-9f3c1e7a5b2d4c6e8a0b"
URL = f"redis://l2:{PASSWORD}@127.0.0.1:6379/0"


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:secret@h:1/0", "redis://:***@h:1/0"),
    ("redis://user:secret@h/0?ssl_ca_certs=/a/ca.crt", "redis://user:***@h/0?ssl_ca_certs=/a/ca.crt"),
    ("rediss://h:6380/0?ssl_password=secret&db=1", "rediss://h:6380/0?ssl_password=***&db=1"),
    ("unix:///run/redis.sock?password=secret", "unix:///run/redis.sock?password=***"),
    ("redis://user@h:1/0", "redis://user@h:1/0"),
    ("redis://h:1/0", "redis://h:1/0"),
    ("redis://secret@[::1", "<unparsable redis URL>"),
    # redis-py percent-decodes the option names: pass%77ord is its password option.
    ("redis://h:1/0?pass%77ord=secret&db=1", "redis://h:1/0?password=***&db=1"),
    ("redis://h:1/0?%70assword=secret", "redis://h:1/0?password=***"),
], ids=["password", "user and password", "ssl_password", "unix password", "user only", "none", "unparsable",
        "escaped option name", "escaped first letter"])
def test_redacted_url_masks_every_password(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def _args(redis: str | None = None, redis_file: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(redis=redis, redis_file=redis_file)


def test_a_password_on_the_command_line_is_refused_with_the_ways_to_give_it(
        capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["worker", "--redis", URL], ["publish", "--redis", URL, "--data", "x.csv"],
                 ["signals", "--redis", URL], ["dashboard", "--redis", URL, "--once"],
                 ["signals", "--redis", "redis://127.0.0.1:6379/0?password=" + PASSWORD],
                 ["signals", "--redis", "redis://127.0.0.1:6379/0?pass%77ord=" + PASSWORD]):
        assert exit_code(argv) == 2, argv
        err = capsys.readouterr().err
        assert "a password on the command line is refused" in err, err
        assert all(w in err for w in ("--redis-file FILE", "L2FAST_REDIS_URL_FILE", "L2FAST_REDIS_URL")), err
        assert PASSWORD not in err


def test_the_url_comes_from_the_option_then_the_file_variable_then_the_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    in_file = secret_file(tmp_path / "redis.url", "redis://a:from-file@h:1/0")
    in_var_file = secret_file(tmp_path / "var.url", "redis://a:from-var-file@h:1/0")
    monkeypatch.setenv("L2FAST_REDIS_URL_FILE", str(in_var_file))
    monkeypatch.setenv("L2FAST_REDIS_URL", "redis://a:from-var@h:1/0")
    assert _redis_url(_args(redis="redis://plain:1/0")) == "redis://plain:1/0"
    assert _redis_url(_args(redis_file=str(in_file))) == "redis://a:from-file@h:1/0"
    assert _redis_url(_args()) == "redis://a:from-var-file@h:1/0"
    monkeypatch.delenv("L2FAST_REDIS_URL_FILE")
    assert _redis_url(_args()) == "redis://a:from-var@h:1/0"
    monkeypatch.delenv("L2FAST_REDIS_URL")
    with pytest.raises(Exception, match="no Redis URL: pass --redis URL .* or --redis-file FILE, or set "
                                        "L2FAST_REDIS_URL_FILE or L2FAST_REDIS_URL"):
        _redis_url(_args())


@pytest.mark.parametrize(("content", "message"), [
    ("", "empty"),
    ("http://a:s3cret@h:1/0", "http://a:***@h:1/0: not a Redis URL"),
    ("redis://a:s3cret@h:99999/0", "redis://a:***@h:99999/0: not a Redis URL"),
], ids=["empty", "not redis", "bad port"])
def test_a_bad_url_file_is_an_input_error_that_masks_the_password(tmp_path: Path, content: str, message: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "redis.url"
    path.write_text(content + "\n")
    assert exit_code(["signals", "--redis-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "s3cret" not in err, err


def test_redis_and_redis_file_are_exclusive(tmp_path: Path) -> None:
    assert exit_code(["signals", "--redis", "redis://h:1/0", "--redis-file", str(tmp_path / "x")]) == 2


def test_no_object_of_ours_shows_the_password() -> None:
    options = WorkerOptions(redis=URL)
    assert PASSWORD not in repr(options) and PASSWORD not in str(options)
    transport = RedisTransport(URL)
    assert transport.url == transport.retry.url == "redis://l2:***@127.0.0.1:6379/0"
    assert PASSWORD not in repr(transport.client) and PASSWORD not in repr(transport.retry)
    error = BusAuthError(redacted_url(URL), "authentication", "authentication failed: WRONGPASS")
    assert PASSWORD not in str(error)


def test_refusals_are_told_apart_from_outages() -> None:
    url = redacted_url(URL)
    wrong = refusal(redis_errors.AuthenticationError("invalid username-password pair or user is disabled."), url)
    assert wrong is not None and wrong.kind == "authentication"
    assert str(wrong) == ("redis at redis://l2:***@127.0.0.1:6379/0: authentication failed: invalid "
                          "username-password pair or user is disabled (check the user and password of the URL)")
    denied = refusal(redis_errors.NoPermissionError("this user has no permissions to run the 'xadd' command"), url)
    assert denied is not None and denied.kind == "permission" and "'xadd'" in str(denied)
    # redis-py wraps the ssl error in a ConnectionError (its cause).
    cert = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cert.verify_message = "self-signed certificate in certificate chain"
    wrapped = redis_errors.ConnectionError("Error 1 connecting to 127.0.0.1:6380.")
    wrapped.__cause__ = cert
    tls = refusal(wrapped, url)
    assert tls is not None and tls.kind == "tls"
    assert "TLS certificate verification failed: self-signed certificate in certificate chain" in str(tls)
    cut = redis_errors.ConnectionError("EOF")
    cut.__cause__ = ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    for transient in (redis_errors.ConnectionError("Connection refused"), redis_errors.TimeoutError("Timeout"),
                      ConnectionResetError(104, "reset"), cut):
        assert refusal(transient, url) is None
    for error in (wrong, denied, tls):
        for back in (pickle.loads(pickle.dumps(error)), copy.deepcopy(error)):
            assert type(back) is BusAuthError and str(back) == str(error) and back.kind == error.kind


def test_a_refusal_is_raised_at_once_not_retried() -> None:
    retry = RedisRetry(URL, give_up_after_s=30)
    calls = 0

    async def denied() -> None:
        nonlocal calls
        calls += 1
        raise redis_errors.NoPermissionError("this user has no permissions to access one of the keys")

    started = time.monotonic()
    with pytest.raises(BusAuthError, match="permission denied") as caught:
        asyncio.run(retry.call(denied))
    assert calls == 1 and time.monotonic() - started < 1 and retry.retries == 0
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


# --- the commands as processes, on a redis-server with a password ------------------------


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("locked")
    server = SecureRedis(folder, [f"requirepass {PASSWORD}"]).start()
    try:
        yield server
    finally:
        server.stop()


def _cli(*args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "l2fast", *args], cwd=REPO,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160", "L2FAST_BUS_KEY": BUS_KEY,
                                 **(env or {})},
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


def _bars(folder: Path, btc_1m: dict) -> Path:
    return write_csv(folder / "btcusdt_1m.csv.gz", {k: v[-300:] for k, v in btc_1m.items()})


def test_the_password_is_in_no_output_log_or_process_list(locked: SecureRedis, tmp_path: Path,
                                                          btc_1m: dict) -> None:
    url_file = secret_file(tmp_path / "redis.url", locked.url("default", PASSWORD))
    by_env = {"L2FAST_REDIS_URL_FILE": str(url_file)}
    logs = [tmp_path / f"{name}.log" for name in ("worker", "publish", "signals", "dashboard")]
    worker = _cli("worker", "--redis-file", str(url_file), "--signals", "all", "--log-level", "debug",
                  "--consumer", "w-secret", log=logs[0])
    try:
        publish = _cli("publish", "--data", str(_bars(tmp_path, btc_1m)), log=logs[1], env=by_env)
        signals = _cli("signals", "--count", "300", "--out", str(tmp_path / "signals.jsonl"), log=logs[2],
                       env={"L2FAST_REDIS_URL": locked.url("default", PASSWORD)})
        cmdlines = {}
        for p in (worker, publish, signals):
            try:
                cmdlines[p.pid] = Path(f"/proc/{p.pid}/cmdline").read_bytes()
            except FileNotFoundError:  # exited already (no /proc here: not Linux)
                assert sys.platform != "linux" or p.poll() is not None
        assert publish.wait(120) == 0, logs[1].read_text()
        assert signals.wait(120) == 0, logs[2].read_text() + logs[0].read_text()
        deadline = time.monotonic() + 30
        while "Portfolio heat" not in logs[3].read_text() if logs[3].exists() else True:
            assert time.monotonic() < deadline, logs[3].read_text()
            dashboard = _cli("dashboard", "--once", log=logs[3], env=by_env)
            assert dashboard.wait(60) == 0, logs[3].read_text()
    finally:
        worker.terminate()
        try:
            code = worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
            pytest.fail(f"the worker did not stop within 60 s of SIGTERM:\n{logs[0].read_text()[-3000:]}")
    assert code == 0, logs[0].read_text()
    assert "redis://default:***@127.0.0.1" in logs[0].read_text()
    assert sum(1 for _ in (tmp_path / "signals.jsonl").open()) == 300
    assert cmdlines, "no command line seen"
    for pid, cmdline in cmdlines.items():
        assert PASSWORD.encode() not in cmdline, pid
    for log in logs:
        assert PASSWORD not in log.read_text(), log.name
    assert PASSWORD not in (locked.folder / "redis.log").read_text()


@pytest.mark.parametrize("command", ["worker", "publish", "signals", "dashboard"])
def test_a_wrong_password_exits_4_at_once_saying_so(locked: SecureRedis, tmp_path: Path, command: str,
                                                    btc_1m: dict) -> None:
    wrong = "not-the-password-4711"
    url_file = secret_file(tmp_path / "redis.url", locked.url("default", wrong))
    extra = {"publish": ["--data", str(_bars(tmp_path, btc_1m))], "dashboard": ["--once"]}.get(command, [])
    started = time.monotonic()
    log = tmp_path / "out.log"
    # --redis-timeout 0: retried as an outage it would never end.
    process = _cli(command, "--redis-file", str(url_file), "--redis-timeout", "0", *extra, log=log)
    try:
        code = process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
    out = log.read_text()
    assert code == EXIT_REDIS_REFUSED, out
    assert time.monotonic() - started < 30  # the interpreter's start-up and imports, under load
    assert f"error: redis at redis://default:***@127.0.0.1:{locked.port}/0: authentication failed: " in out, out
    assert "unreachable" not in out and "retry" not in out and "waiting for its lease" not in out, out
    assert wrong not in out and PASSWORD not in out and "Traceback" not in out, out
