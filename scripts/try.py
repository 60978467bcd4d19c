"""Driver for scripts/try: serve, submit one page, show the links, keep running."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


def sample_page_server() -> str:
    page = (ROOT / "docs" / "sample-page.html").read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/tide-pools"


def main() -> int:
    url = sys.argv[1] if len(sys.argv) > 1 else None
    approver = sys.argv[2] if len(sys.argv) > 2 else "you@example.com"
    env = dict(os.environ)
    if url is None:
        url = sample_page_server()
        env.setdefault("MAILGATE_ALLOW_PRIVATE_URLS", "1")
    port = env.get("MAILGATE_HTTP_PORT", "9000")
    serve = subprocess.Popen([str(ROOT / ".venv" / "bin" / "mailgate"), "serve"], env=env)
    base = f"http://127.0.0.1:{port}"
    headers = {"accept": "application/json"}
    if env.get("MAILGATE_API_TOKEN"):
        headers["authorization"] = f"Bearer {env['MAILGATE_API_TOKEN']}"
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                if serve.poll() is not None:
                    return serve.returncode or 1
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    print("mailgate did not start within 60 s", file=sys.stderr)
                    return 1
                time.sleep(0.3)
            reply = client.post("/requests", json={"url": url, "email": approver})
            if reply.status_code not in (200, 202):
                print(f">>> {url} was refused: {reply.json().get('error')}", file=sys.stderr)
                serve.terminate()
                return 1
            request_id = reply.json()["id"]
            print(f"\n>>> submitted {url} for {approver} as {request_id}; summarizing…", flush=True)
            view = wait_until_asked(client, request_id, serve)
            if view is not None:
                print(explain(view, base), flush=True)
            return wait_interruptibly(serve)
    except KeyboardInterrupt:
        return 0
    finally:
        if serve.poll() is None:
            serve.terminate()
        serve.wait(timeout=30)


def wait_interruptibly(serve: subprocess.Popen[bytes]) -> int:
    """``serve.wait()`` in short slices: a blocking ``waitpid`` only sees Ctrl-C if the kernel
    hands the signal to this thread, and the page server's thread may take it instead."""
    while True:
        try:
            return serve.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            continue


def wait_until_asked(
    client: httpx.Client, request_id: str, serve: subprocess.Popen[bytes]
) -> dict[str, Any] | None:
    """The request once its first round has been sent (the link is then printed above), or
    once it failed; None if `mailgate serve` exited first. Ollama on a CPU takes minutes."""
    while serve.poll() is None:
        view = client.get(f"/requests/{request_id}").json()
        if view["state"] != "summarizing":
            return view
        time.sleep(0.5)
    return None


def explain(view: dict[str, Any], base: str) -> str:
    pages = f">>> this request: {base}/dashboard/{view['id']}   all requests: {base}/\n"
    if view["state"] == "waiting":
        where = (
            "the decision link is printed just above (when Mailgate found MailHog at start, "
            "it is in MailHog at http://localhost:8025 instead)"
        )
        what = f"round {len(view['rounds'])} waits for {view['approver']}: {where}"
    else:
        what = f"the request is {view['state']}: {view['detail']}"
    return f">>> {what}.\n{pages}>>> Ctrl-C stops Mailgate.\n"


if __name__ == "__main__":
    sys.exit(main())
