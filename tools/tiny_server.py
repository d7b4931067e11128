"""A small OpenAI-compatible server for tests, benchmarks and demos of the openai backend, on 127.0.0.1.

It speaks what vLLM and SGLang speak for Rumination: GET /v1/models (with max_model_len), POST
/v1/completions (a prompt of token ids or text) and /v1/chat/completions, both streamed as server-sent events
with usage (including the prompt tokens its block prefix cache held) in the last event. It generates with the
tiny Glm4 model (`--model DIR`, from tools/build_tiny_model.py), or replays a script: a JSON array whose i-th
string is the output of every run's i-th generation (counted by the assistant turns in the prompt), so
concurrent runs each get the whole script.

    python tools/tiny_server.py --model /tmp/tiny-glm --port 8000
    python tools/tiny_server.py --script outputs.json --latency 0.5
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BLOCK = 16  # tokens per KV-cache block: prefix-cache hits come in whole blocks, as in vLLM


@dataclass
class Faults:
    """Failures to inject: a required key, and connections cut mid-stream."""

    api_key: str | None = None
    cut_streams: int = 0  # the next N streams are cut after `cut_after` events
    cut_after: int = 2
    status: int | None = None  # answer every generation request with this status
    reasoning_parser: bool = False  # chat: send the thinking as reasoning_content, as vLLM's parsers do
    ignore_stops: bool = False  # stream a script's output whole, stop tokens and all, as a careless server would


@dataclass
class Served:
    """Everything the server knows and records."""

    name: str
    tokenizer: Any
    model: Any = None
    script: list[str] | None = None
    max_model_len: int = 131072
    lists_max_model_len: bool = True  # False: /v1/models does not say it (a server that learns it by refusing)
    latency: float = 0.0  # seconds before the first token of every request
    faults: Faults = field(default_factory=Faults)
    requests: list[dict[str, Any]] = field(default_factory=list)  # every generation request's JSON body
    prompts: list[list[int]] = field(default_factory=list)  # the token ids each generation was given
    blocks: set[int] = field(default_factory=set)  # chained hashes of every cached 16-token block, as vLLM keeps
    lock: threading.Lock = field(default_factory=threading.Lock)
    streaming: int = 0  # generations in flight now
    most_streaming: int = 0  # the most ever in flight at once

    def cache(self, ids: list[int]) -> int:
        """Cache the prompt's full blocks; return how many of its tokens were cached before (a multiple of 16)."""
        cached, chain, hit = 0, 0, True
        for start in range(0, len(ids) - BLOCK + 1, BLOCK):
            chain = hash((chain, *ids[start : start + BLOCK]))
            if hit and chain in self.blocks:
                cached = start + BLOCK
            else:
                hit = False
                self.blocks.add(chain)
        return min(cached, len(ids) - 1)  # the last prompt token is always computed

    def generate(self, ids: list[int], body: dict[str, Any]) -> tuple[list[int], str]:
        """The token ids generated for `ids`, and the finish reason."""
        stops = set(body.get("stop_token_ids") or [])
        limit = int(body.get("max_tokens") or 16)
        if self.script is not None:
            assistant = self.tokenizer.convert_tokens_to_ids("<|assistant|>")
            turn = ids.count(assistant) - 1
            text = self.script[min(turn, len(self.script) - 1)]
            out = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            out = [*out, self.tokenizer.convert_tokens_to_ids("<|observation|>")]
            if not self.faults.ignore_stops:
                out = out[: next(i for i, token in enumerate(out) if token in stops or i == len(out) - 1) + 1]
            if len(out) > limit:
                return out[:limit], "length"
            return out, "stop"
        import torch

        temperature = float(body.get("temperature", 1.0))
        options: dict[str, Any] = {"do_sample": temperature > 0, "max_new_tokens": limit, "eos_token_id": list(stops)}
        if temperature > 0:
            top_k = int(body.get("top_k", -1))
            options.update(
                temperature=temperature, top_p=float(body.get("top_p", 1.0)), top_k=top_k if top_k > 0 else 0
            )
            if body.get("seed") is not None:
                torch.manual_seed(int(body["seed"]))
        with self.lock, torch.no_grad():
            output = self.model.generate(torch.tensor([ids]), pad_token_id=0, **options)[0, len(ids) :].tolist()
        return output, "stop" if output and output[-1] in stops else "length"


class Handler(BaseHTTPRequestHandler):
    """One request."""

    server: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        if not self._authorised():
            return
        if self.path.rstrip("/") != "/v1/models":
            return self._json(404, {"error": {"message": f"no route {self.path}"}})
        served = self.server.served
        card: dict[str, Any] = {"id": served.name, "object": "model", "owned_by": "rumination"}
        if served.lists_max_model_len:
            card["max_model_len"] = served.max_model_len
        self._json(200, {"object": "list", "data": [card]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if not self._authorised():
            return
        served = self.server.served
        chat = self.path == "/v1/chat/completions"
        if self.path not in ("/v1/completions", "/v1/chat/completions"):
            return self._json(404, {"error": {"message": f"no route {self.path}"}})
        if body.get("model") != served.name:
            return self._json(404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}})
        with served.lock:
            served.requests.append(body)
        if served.faults.status:
            return self._json(served.faults.status, {"error": {"message": "injected failure"}})
        if chat:
            text = served.tokenizer.apply_chat_template(body["messages"], tokenize=False, add_generation_prompt=True)
            ids = served.tokenizer(text, add_special_tokens=False)["input_ids"]
        elif isinstance(body["prompt"], list):
            ids = list(body["prompt"])
        else:
            ids = served.tokenizer(body["prompt"], add_special_tokens=False)["input_ids"]
        if len(ids) + int(body.get("max_tokens") or 16) > served.max_model_len:
            message = f"This model's maximum context length is {served.max_model_len} tokens."
            return self._json(400, {"error": {"message": message}})
        with served.lock:
            cached = served.cache(ids)
            served.prompts.append(ids)
        with served.lock:
            served.streaming += 1
            served.most_streaming = max(served.most_streaming, served.streaming)
        try:
            if served.latency:
                time.sleep(served.latency)
            out, finish = served.generate(ids, body)
            self._stream(out, finish, len(ids), cached, chat, skip=body.get("skip_special_tokens", True))
        finally:
            with served.lock:
                served.streaming -= 1

    def _authorised(self) -> bool:
        key = self.server.served.faults.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self._json(401, {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error"}})
        return False

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, out: list[int], finish: str, prompt_tokens: int, cached: int, chat: bool, skip: bool) -> None:
        served, faults = self.server.served, self.server.served.faults
        tok = served.tokenizer
        stops = {tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|user|>", "<|observation|>")}
        shown = out[:-1] if out and out[-1] in stops else out
        # Incremental detokenising: each event carries the text that the next token completes.
        texts, previous = [], ""
        for i in range(len(shown)):
            full = tok.decode(shown[: i + 1], skip_special_tokens=skip)
            if not full.endswith("\ufffd"):
                texts.append(full[len(previous) :])
                previous = full
        cut = False
        with served.lock:
            if faults.cut_streams:
                faults.cut_streams -= 1
                cut = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        ident, thinking = f"cmpl-{uuid.uuid4().hex[:12]}", True
        for n, text in enumerate(texts):
            if cut and n == faults.cut_after:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True
                return
            if not chat:
                choice = {"index": 0, "text": text, "finish_reason": None}
            elif faults.reasoning_parser and thinking:
                thinking = "</think>" not in text
                delta = {"reasoning_content": text.replace("<think>", "").split("</think>")[0]}
                if not thinking:
                    delta["content"] = text.split("</think>", 1)[1]
                choice = {"index": 0, "delta": delta, "finish_reason": None}
            else:
                choice = {"index": 0, "delta": {"content": text}, "finish_reason": None}
            self._event(ident, chat, [choice])
        last = {"index": 0, "finish_reason": finish, **({"delta": {}} if chat else {"text": ""})}
        self._event(ident, chat, [last])
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(out),
            "total_tokens": prompt_tokens + len(out),
        }
        if cached:  # vLLM and SGLang leave the details out when nothing was cached
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        self._event(ident, chat, [], usage)
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _event(
        self, ident: str, chat: bool, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None
    ) -> None:
        kind = "chat.completion.chunk" if chat else "text_completion"
        payload = {"id": ident, "object": kind, "created": int(time.time()), "model": self.server.served.name}
        payload.update(choices=choices, usage=usage)
        self._chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


class Server(ThreadingHTTPServer):
    """The server; `start()` serves from a daemon thread, `url` is the API root."""

    daemon_threads = True

    def __init__(self, served: Served, port: int = 0):
        super().__init__(("127.0.0.1", port), Handler)
        self.served = served

    @property
    def url(self) -> str:
        """The API root, ending in /v1."""
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up (a cancelled generation) are expected."""

    def start(self) -> Server:
        """Serve from a daemon thread."""
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.shutdown()
        self.server_close()


def serve(
    *,
    model_dir: Path | None = None,
    script: list[str] | None = None,
    name: str = "tiny-glm",
    port: int = 0,
    **options: Any,
) -> Server:
    """Start a server for the tiny model in `model_dir`, or one replaying `script` with the bundled tokenizer."""
    from transformers import AutoTokenizer

    if (model_dir is None) == (script is None):
        raise ValueError("give a model directory or a script")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir or ROOT / "prompts" / "tokenizer"))
    model = None
    if model_dir is not None:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    return Server(Served(name=name, tokenizer=tokenizer, model=model, script=script, **options), port).start()


def main() -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="a tiny model directory from tools/build_tiny_model.py")
    source.add_argument("--script", type=Path, help="a JSON array of outputs, one per generation of a run")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--name", default="tiny-glm", help="the served model name")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each first token")
    parser.add_argument("--max-model-len", type=int, default=131072)
    args = parser.parse_args()
    script = json.loads(args.script.read_text(encoding="utf-8")) if args.script else None
    server = serve(
        model_dir=args.model,
        script=script,
        name=args.name,
        port=args.port,
        latency=args.latency,
        max_model_len=args.max_model_len,
    )
    print(f"serving {args.name} at {server.url} (Ctrl-C stops)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
