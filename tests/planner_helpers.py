"""A real OpenAI-compatible chat server on loopback, scripted per test."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VALID_PLAN = {"skills": [{"description": "reach and grasp the puck", "kind": "grasp"},
                         {"description": "place the puck at the goal", "kind": "place"}]}


def chat_reply(content: str) -> dict:
    return {"id": "chatcmpl-test", "object": "chat.completion", "model": "test-model",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}]}


class FakeChatServer:
    """Answers /chat/completions from a script: each item is ('json', obj) | ('text', str) |
    ('sleep', seconds) | ('status', code). The last item repeats. Requests are recorded."""

    def __init__(self, script=None) -> None:
        self.script = list(script or [("json", VALID_PLAN)])
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up (timeouts)
                    self.wfile.write(body)

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "test-model"}]})

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                outer.requests.append(json.loads(self.rfile.read(length)))
                outer.headers.append(dict(self.headers))
                index = min(len(outer.requests) - 1, len(outer.script) - 1)
                kind, value = outer.script[index]
                if kind == "sleep":
                    time.sleep(value)
                    self._send(200, chat_reply(json.dumps(VALID_PLAN)))
                elif kind == "status":
                    self._send(value, {"error": {"message": "scripted failure"}})
                elif kind == "text":
                    self._send(200, chat_reply(value))
                elif kind == "obey":  # a well-behaved model: honours "at most N skills"
                    system = outer.requests[-1]["messages"][0]["content"]
                    limit = int(re.search(r"at most (\d+) skills", system).group(1))
                    plan = {"skills": VALID_PLAN["skills"][:limit]}
                    self._send(200, chat_reply(json.dumps(plan)))
                else:
                    self._send(200, chat_reply(json.dumps(value)))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
