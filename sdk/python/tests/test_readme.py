# SPDX-License-Identifier: MIT
"""The README's Flask webhook receiver, taken from README.md as written and
served by Flask to a real presenced: a handler that fails once loses nothing
(presenced retries the batch, and the guard must let the retry through)."""
import pathlib
import re
import threading
import time

from presenced import WebhookError, WebhookGuard, verify_webhook
from conftest import Presenced, User, free_port, wait_for

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
SECRET = "sdk-python-readme-webhook-secret"


def flask_snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    [code] = [b for b in blocks if '@app.post("/presence")' in b]
    return code


def test_readme_flask_receiver_loses_nothing_when_apply_fails_once():
    from flask import Flask, request
    from werkzeug.serving import make_server

    applied, failures = [], []

    def apply(event):
        if not failures:                 # the database is down for the first event
            failures.append(event["type"])
            raise RuntimeError("database down")
        applied.append(event["type"])
    app = Flask("readme")
    app.logger.disabled = True           # the failure is on purpose
    exec(flask_snippet(), {"app": app, "request": request, "SECRET": SECRET, "apply": apply,
                           "verify_webhook": verify_webhook, "WebhookGuard": WebhookGuard, "WebhookError": WebhookError})
    port = free_port()
    srv = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    pd = Presenced("--webhook", f"url=http://127.0.0.1:{port}/presence,secret={SECRET}",
                   "--webhook-batch-ms", "10", "--webhook-retry-min-ms", "50", "--webhook-retry-max-ms", "100").start()
    try:
        User(pd, "alice").close()
        want = ["cleanup", "session.connected", "user.online", "session.disconnected", "user.offline"]
        wait_for(lambda: "user.offline" in applied, what="alice's events applied")
        time.sleep(0.3)                  # a retry (or a duplicate) would be in by now
        assert failures == ["cleanup"] and applied == want
    finally:
        pd.stop()
        srv.shutdown()


def test_asgi_webhook_docstring_routes_its_path():
    # ASGIWebhook's docstring says how to route it; a POST to that very path
    # (the URL given to presenced) must reach it: the app.mount it showed
    # answered /hook with 307 to /hook/, and presenced follows no redirect.
    import asyncio
    from fastapi import FastAPI
    from presenced import ASGIWebhook
    [usage] = re.findall(r"``(app\.\w+\(\"/hook\", ASGIWebhook\(\.\.\.\).*?)``", ASGIWebhook.__doc__, re.S)
    app = FastAPI()
    exec(usage.replace("ASGIWebhook(...)", "ASGIWebhook(SECRET, print)"), {"app": app, "ASGIWebhook": ASGIWebhook, "SECRET": SECRET})
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/hook", "raw_path": b"/hook", "root_path": "", "query_string": b"", "headers": [(b"host", b"app")],
             "server": ("app", 80), "client": ("127.0.0.1", 1)}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 401 and b"missing_signature" in sent[1]["body"], sent
