"""A fake OpenAI-compatible chat server for the judge's tests, in the real wire format."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

GOOD = {"grammar": 8, "creativity": 6, "consistency": 9, "plot": 7, "age_group": "B"}


class FakeChat(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint (ChatCompletion JSON, as vLLM returns it) whose
    replies come from a queue; a status code in the queue is returned as an error."""

    replies: list = []
    requests: list = []

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeChat.requests.append(body)
        reply = FakeChat.replies.pop(0) if FakeChat.replies else json.dumps(GOOD)
        logprobs = None
        if isinstance(reply, tuple):  # (content, logprobs content) in the OpenAI wire format
            reply, logprobs = reply[0], {"content": reply[1]}
        if reply == 401:  # a server that quotes the key it was sent, without "Bearer "
            key = self.headers["Authorization"].removeprefix("Bearer ")
            data, code = json.dumps({"error": {"message": f"Incorrect API key provided: {key}. Check your key.",
                                               "type": "invalid_request_error"}}).encode(), 401
        elif isinstance(reply, int):
            data, code = json.dumps({"error": {"message": "overloaded", "type": "server_error"}}).encode(), reply
        else:
            data, code = json.dumps({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": logprobs,
                             "message": {"role": "assistant", "content": reply, "tool_calls": []}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}).encode(), 200
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def chat_server():
    FakeChat.replies, FakeChat.requests = [], []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeChat)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
