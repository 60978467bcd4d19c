"""Driver for scripts/try: serve, submit one page, show the links, keep running."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

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
            print(f"\n>>> submitted {url} for {approver}: {reply.json()}", flush=True)
            print(
                f">>> dashboard: {base}/   (the decision link is printed above, or in MailHog "
                "at http://localhost:8025 when it runs). Ctrl-C to stop.\n",
                flush=True,
            )
            serve.wait()
    except KeyboardInterrupt:
        serve.terminate()
        serve.wait(timeout=30)
    return serve.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
