"""Token authentication on the real local cluster: refused without the token, served with it.

Ray 2.60 clusters started with `ray start` require the token on every HTTP and
gRPC request; the dashboard answers 401 without one and 403 for a wrong one.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import urllib.error
import urllib.request

import pytest
import yaml

from cluster import local
from cluster.client import ClusterError, Token, find_token
from tests.conftest import train_document
from tests.test_cli import job_ids, one_error_line, sweetspot

WRONG = "0" * 64


def the_token() -> str:
    return local.TOKEN_FILE.read_text().strip()


def get(path: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(local.DASHBOARD_URL + path)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.timeout(60)
def test_the_dashboard_api_refuses_requests_without_the_token(ray_cluster):
    status, body = get("/api/jobs/")
    assert status == 401 and "Missing authentication token" in body
    status, body = get("/api/jobs/", WRONG)
    assert status == 403 and "Invalid authentication token" in body
    status, body = get("/api/jobs/", the_token())
    assert status == 200 and isinstance(json.loads(body), list)


@pytest.mark.timeout(60)
def test_the_job_submission_client_needs_the_token(ray_cluster):
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    with pytest.raises(AuthenticationError, match="Authentication failed"):
        JobSubmissionClient(local.DASHBOARD_URL, headers={"Authorization": f"Bearer {WRONG}"})
    client = JobSubmissionClient(local.DASHBOARD_URL, headers={"Authorization": f"Bearer {the_token()}"})
    assert isinstance(client.list_jobs(), list)


@pytest.mark.timeout(120)
def test_ray_job_list_with_a_wrong_token_is_refused_and_the_right_one_served(ray_cluster):
    def ray_job_list(token: str) -> subprocess.CompletedProcess:
        env = {**local.client_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
        return subprocess.run([local.ray_executable(), "job", "list", "--address", local.DASHBOARD_URL],
                              env=env, capture_output=True, text=True, timeout=60)

    refused = ray_job_list(WRONG)
    assert refused.returncode != 0
    assert "Authentication failed" in refused.stdout + refused.stderr
    served = ray_job_list(the_token())
    assert served.returncode == 0, served.stderr


@pytest.mark.timeout(120)
def test_sweetspot_with_a_wrong_token_says_what_to_do_and_submits_nothing(ray_cluster, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(train_document(name="auth-wrong")))
    before = job_ids()
    line = one_error_line(sweetspot("submit", spec, env={"RAY_AUTH_TOKEN": WRONG}))
    assert line == (f"error: the Ray cluster at {local.DASHBOARD_URL} refused the auth token from $RAY_AUTH_TOKEN: "
                    f"it is not this cluster's token; set RAY_AUTH_TOKEN (or {local.TOKEN_FILE}) to the output of "
                    "`ray get-auth-token` on its head node")
    assert "refused the auth token" in one_error_line(sweetspot("list", env={"RAY_AUTH_TOKEN": WRONG}))
    assert job_ids() == before
    # the same command with the right token, from each place Ray looks
    assert sweetspot("list", env={"RAY_AUTH_TOKEN": the_token()}).returncode == 0
    token_file = tmp_path / "token"
    token_file.write_text(the_token() + "\n")
    assert sweetspot("list", env={"RAY_AUTH_TOKEN_PATH": str(token_file)}).returncode == 0
    assert sweetspot("list").returncode == 0  # ~/.ray/auth_token


@pytest.mark.timeout(120)
def test_sweetspot_without_a_token_says_where_to_put_one(ray_cluster, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "RAY_AUTH_TOKEN": "", "RAY_AUTH_TOKEN_PATH": ""}
    line = one_error_line(sweetspot("list", env=env))
    assert line.startswith(f"error: the Ray cluster at {local.DASHBOARD_URL} requires an auth token and none was found")
    assert f"save it to {home / '.ray' / 'auth_token'}" in line and "ray get-auth-token" in line
    missing = one_error_line(sweetspot("list", env={"RAY_AUTH_TOKEN_PATH": str(tmp_path / "nope")}))
    assert missing.startswith(f"error: RAY_AUTH_TOKEN_PATH is {tmp_path / 'nope'}, which cannot be read")


def test_the_token_is_found_in_rays_order(monkeypatch, tmp_path):
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert find_token() is None
    (home / ".ray" / "auth_token").write_text("from-default\n")
    assert find_token() == Token("from-default", str(home / ".ray" / "auth_token"))
    (tmp_path / "file").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "file"))
    assert find_token() == Token("from-path", str(tmp_path / "file"))
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert find_token() == Token("from-env", "$RAY_AUTH_TOKEN")
    # Like Ray, a RAY_AUTH_TOKEN_PATH naming nothing is an error, not a fallback.
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(ClusterError, match="cannot be read"):
        find_token()


@pytest.mark.timeout(60)
def test_up_keeps_the_token_file_readable_by_its_owner_only(ray_cluster):
    local.TOKEN_FILE.chmod(0o644)  # what Ray writes
    assert local.up() is False  # already running: nothing restarted
    mode = stat.S_IMODE(os.stat(local.TOKEN_FILE).st_mode)
    assert mode == 0o600, oct(mode)
    said = sweetspot("up")
    assert said.returncode == 0 and "token auth on" in said.stdout  # asked of the running cluster, not assumed


def test_a_token_file_others_can_read_is_warned_about(monkeypatch, tmp_path, capsys):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    token_file.chmod(0o640)
    assert find_token().value == "s3cret"
    warning = capsys.readouterr().err
    assert f"the token file {token_file} has mode 640" in warning and f"chmod 600 {token_file}" in warning
    assert "s3cret" not in warning
    token_file.chmod(0o600)
    find_token()
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("status, in_force", [(200, False), (401, True), (403, True)])
def test_up_reports_the_auth_mode_the_dashboard_enforces(status, in_force):
    """`sweetspot up` asks the dashboard (a request without a token) rather than trusting this shell's setting."""
    import http.server
    import threading

    class Dashboard(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Dashboard)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert local.token_auth_in_force(f"http://127.0.0.1:{server.server_port}") is in_force
    finally:
        server.shutdown()


def test_a_token_never_shows_its_secret():
    token = Token("s3cret-value", "$RAY_AUTH_TOKEN")
    assert "s3cret-value" not in repr(token) and "s3cret-value" not in str(token)
    assert "$RAY_AUTH_TOKEN" in repr(token)
