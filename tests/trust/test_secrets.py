"""Secrets: every userinfo form, secret query parameters and bearer tokens are masked; sources come from
env:VAR / file:PATH / --source-file so they stay off the command line, and errors do not leak them."""
from __future__ import annotations

import pytest

from edgefg.errors import InputPathError
from edgefg.runtime.capture.sources import redact
from edgefg.trust.secrets import mask, read_secret_file, resolve
from tests.trust.conftest import edgefg, one_line_error

CASES = [
    ("rtsp://user:secret@cam/stream", "rtsp://user:***@cam/stream", "secret"),
    ("rtsp://admin:p@ss@w0rd@10.0.0.5:554/live", "rtsp://admin:***@10.0.0.5:554/live", "w0rd"),
    ("rtsp://admin:pa:ss@cam/s", "rtsp://admin:***@cam/s", "pa:ss"),
    ("rtsp://u:pa/ss@cam/s", "rtsp://u:***@cam/s", "pa/ss"),
    ("https://ghp_abcdef123456@github.com/x", "https://***@github.com/x", "ghp_abcdef123456"),
    ("rtsp://:onlypassword@cam/s", "rtsp://***@cam/s", "onlypassword"),
    ("http://cam/snap.jpg?user=a&pwd=hunter2&ch=1", "http://cam/snap.jpg?user=a&pwd=***&ch=1", "hunter2"),
    ("http://cam/s?password=x1y2&token=t0k3n&api_key=k3y&auth=zz99&secret=s3c", None, "t0k3n"),
    ("rtsp://cam/live?access_token=abc.def-ghi", "rtsp://cam/live?access_token=***", "abc.def-ghi"),
    ("Authorization: Bearer eyJhbGciOi.payload.sig", "Authorization: Bearer ***", "eyJhbGciOi"),
    ("mqtt://user:pw123@broker:1883", "mqtt://user:***@broker:1883", "pw123"),
    ("cannot open url source 'rtsp://u:p4ss@h/x'", "cannot open url source 'rtsp://u:***@h/x'", "p4ss"),
    ("rtsp://cam:554/stream1", "rtsp://cam:554/stream1", None),
    ("photos/a@2x.jpg", "photos/a@2x.jpg", None),
]


@pytest.mark.parametrize("text,expected,secret", CASES)
def test_mask(text, expected, secret):
    out = mask(text)
    if expected is not None:
        assert out == expected
    if secret:
        assert secret not in out
    assert redact(text) == out  # the name sources/logs/metrics use


def test_resolve_env_and_file_and_remember(monkeypatch, tmp_path):
    monkeypatch.setenv("CAM_URL", "rtsp://bob:Zz9-top@cam/live")
    assert resolve("env:CAM_URL") == "rtsp://bob:Zz9-top@cam/live"
    assert mask("the password Zz9-top appeared in a library message") == "the password *** appeared in a library message"
    f = tmp_path / "cam.url"
    f.write_text("# the camera\nrtsp://eve:Qq7-file@cam2/live\n")
    assert resolve(f"file:{f}") == "rtsp://eve:Qq7-file@cam2/live"
    assert "Qq7-file" not in mask("x Qq7-file y")
    assert resolve("0") == "0" and resolve(None) is None and resolve("file:///v.mp4") == "file:///v.mp4"
    monkeypatch.setenv("FOLDER", str(tmp_path))
    assert resolve("env:FOLDER") == str(tmp_path) and mask(str(tmp_path)) == str(tmp_path)  # not a secret: stays readable
    monkeypatch.setenv("MQTT_PASSWORD", "Pw-0987")
    assert resolve("env:MQTT_PASSWORD", whole=True) == "Pw-0987" and mask("login Pw-0987") == "login ***"
    with pytest.raises(InputPathError, match="NOPE_UNSET"):
        resolve("env:NOPE_UNSET")
    with pytest.raises(InputPathError, match="cannot be read"):
        read_secret_file(tmp_path / "missing")
    (tmp_path / "empty").write_text("\n# nothing\n")
    with pytest.raises(InputPathError, match="empty"):
        read_secret_file(tmp_path / "empty")


def test_run_reads_the_source_from_env_or_file_and_never_prints_the_password(tmp_path):
    from tests.trust.conftest import make_bundle

    bundle = make_bundle(tmp_path / "b")
    url = "rtsp://admin:S3cr@t-pass@127.0.0.1:9/stream?token=T0kenValue"  # port 9: nothing listens
    (tmp_path / "src").write_text(url + "\n")
    for args, env in ((["--source", "env:CAM"], {"CAM": url}), (["--source-file", tmp_path / "src"], {}), (["--source", f"file:{tmp_path / 'src'}"], {})):
        proc = edgefg("run", bundle, *args, "--max-retries", "0", env=env, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        for leaked in ("S3cr", "t-pass", "T0kenValue"):
            assert leaked not in proc.stderr + proc.stdout, proc.stderr
        assert "admin:***@127.0.0.1" in proc.stderr
    assert "not set" in one_line_error(edgefg("run", bundle, "--source", "env:UNSET_CAMERA_URL"))
