"""A real LiteLLM proxy for tests/integration/test_litellm.py: its venv, its config, its process.

LiteLLM lives in its own git-ignored venv (.venv-litellm/, made by litellm_venv.sh) because its
dependency tree is large; the tests talk to it over HTTP only and never import it.  The proxy
listens on 127.0.0.1 only; its upstreams are mock models (``mock_response``) and loopback
FakeServers.  Start-up is offline: the bundled model cost map (LITELLM_LOCAL_MODEL_COST_MAP),
no telemetry, no database, no proxy variables inherited.

The config is written as JSON, which LiteLLM's YAML loader reads as it is (JSON is YAML's flow
style), so no YAML library is needed here.  Keys are checked by a LiteLLM *custom auth* module
(``general_settings.custom_auth``, LiteLLM's documented hook) written next to the config: the
keys listed are accepted, any other gets LiteLLM's own 401.  Without it a DB-less proxy has only
its master key, and answers any other key with 400 "No connected db." (see test_litellm.py).
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request

from tests.integration.support import REPO, free_port

#: LITELLM_VENV as litellm_venv.sh reads it: relative to the repository root
VENV = os.path.join(REPO, os.environ.get("LITELLM_VENV") or ".venv-litellm")
LITELLM = os.path.join(VENV, "bin", "litellm")
VENV_SCRIPT = "tests/integration/litellm_venv.sh"
#: seconds the proxy may take to answer /health/liveliness (about 10 s on 2 shared cores)
START_TIMEOUT = float(os.environ.get("OPENAI2_LITELLM_START_TIMEOUT", "120"))

_AUTH_MODULE = '''"""Written by tests/integration/litellm_support.py: accept these keys, refuse the rest."""
from fastapi import HTTPException, Request
from litellm.proxy._types import UserAPIKeyAuth

ACCEPTED = set(%r)


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    if api_key in ACCEPTED:
        return UserAPIKeyAuth(api_key=api_key)
    # An HTTPException becomes LiteLLM's own 401 auth_error.  (A bare Exception, as LiteLLM's
    # docs show, makes its error handler import prisma, which litellm[proxy] does not install:
    # the client would get a 500.)
    raise HTTPException(status_code=401, detail="invalid proxy key")
'''


def litellm_missing() -> str | None:
    """None when the LiteLLM venv is there, else why the tests skip (and how to make it)."""
    if not os.path.isfile(LITELLM) or not os.access(LITELLM, os.X_OK):
        return "no LiteLLM venv at %s (create it: bash %s; make integration does)" % (VENV, VENV_SCRIPT)
    return None


def litellm_version() -> str:
    """The installed LiteLLM's version, read from its dist-info folder (nothing is imported)."""
    lib = os.path.join(VENV, "lib")
    for pyver in sorted(os.listdir(lib)) if os.path.isdir(lib) else ():
        site = os.path.join(lib, pyver, "site-packages")
        for name in sorted(os.listdir(site)) if os.path.isdir(site) else ():
            version = name[len("litellm-"):-len(".dist-info")]
            if name.startswith("litellm-") and name.endswith(".dist-info") and "-" not in version:
                return version
    return "unknown"


def mock_model(name: str, answer: str) -> dict:
    """A model LiteLLM answers itself (``mock_response``): no upstream is called."""
    return {"model_name": name, "litellm_params": {"model": "openai/" + name, "api_key": "sk-mock-unused",
                                                   "mock_response": answer}}


def upstream_model(name: str, base_url: str, api_key: str) -> dict:
    """A model LiteLLM forwards to an OpenAI-compatible upstream (a loopback FakeServer)."""
    return {"model_name": name, "litellm_params": {"model": "openai/" + name, "api_base": base_url,
                                                   "api_key": api_key, "max_retries": 0}}


class LiteLLMProxy:
    """``litellm --config cfg --host 127.0.0.1 --port P`` in its own process group.

    :param tmp: a folder for the config, the auth module and the log
    :param models: ``model_list`` entries (see mock_model / upstream_model)
    :param keys: the client keys the custom auth module accepts (any other: 401); None: no
        custom auth, LiteLLM's own key check, where only ``master_key`` is accepted
    """

    def __init__(self, tmp: str, models: list, keys: list | None) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.base_url = "http://127.0.0.1:%d/v1" % self.port
        self.config_path = os.path.join(tmp, "litellm-%d.yaml" % self.port)
        #: the proxy refuses to start without a strong master key (with custom auth it is unused)
        self.master_key = "sk-" + secrets.token_hex(32)
        general = {"master_key": self.master_key, "disable_spend_logs": True}
        if keys is not None:
            module = "openai2_litellm_auth_%d" % self.port
            with open(os.path.join(tmp, module + ".py"), "w") as fh:
                fh.write(_AUTH_MODULE % (sorted(keys),))
            general["custom_auth"] = module + ".user_api_key_auth"
        config = {
            "model_list": models,
            "litellm_settings": {"telemetry": False, "drop_params": False, "num_retries": 0,
                                 "request_timeout": 30},
            "general_settings": general,
        }
        with open(self.config_path, "w") as fh:
            json.dump(config, fh, indent=2)
        self.log_path = os.path.join(tmp, "litellm-%d.log" % self.port)
        self.proc: subprocess.Popen | None = None
        self._started = 0.0
        self.startup_seconds = 0.0

    def _env(self) -> dict:
        drop = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "OPENAI_API_KEY", "OPENAI_BASE_URL",
                "DATABASE_URL", "LITELLM_MASTER_KEY", "REDIS_HOST", "REDIS_URL")
        env = {k: v for k, v in os.environ.items() if k.upper() not in drop and not k.startswith("PYTHON")}
        env.update(
            HOME=self.tmp,  # anything LiteLLM caches goes to the temporary folder
            LITELLM_LOCAL_MODEL_COST_MAP="True",  # the bundled cost map: no download at start-up
            LITELLM_TELEMETRY="False",
            NO_PROXY="*",
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",
        )
        return env

    def launch(self) -> LiteLLMProxy:
        """Start the process; wait_ready() waits for it (two proxies can start side by side)."""
        self._started = time.monotonic()
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [LITELLM, "--config", self.config_path, "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=self.tmp, env=self._env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends it and any worker it forks
            )
        finally:
            log.close()
        return self

    def wait_ready(self) -> LiteLLMProxy:
        try:
            self._wait_ready(self._started + START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - self._started
        return self

    def start(self) -> LiteLLMProxy:
        return self.launch().wait_ready()

    def _wait_ready(self, deadline: float) -> None:
        url = "http://127.0.0.1:%d/health/liveliness" % self.port
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError("litellm exited with status %s before it was ready; its log ends:\n%s"
                                   % (self.proc.returncode, self.log_tail()))
            try:
                with opener.open(url, timeout=2) as rsp:
                    if rsp.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("litellm did not answer %s within %.0f s; its log ends:\n%s"
                                   % (url, START_TIMEOUT, self.log_tail()))
            time.sleep(0.2)

    def log_text(self) -> str:
        try:
            with open(self.log_path, errors="replace") as fh:
                return fh.read()
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the group of the process started above, by its id
        except ProcessLookupError:
            return
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def __enter__(self) -> LiteLLMProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
