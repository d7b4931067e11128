"""PDF text extraction in a separate process with a wall-clock timeout and a memory limit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import subprocess
import sys
from typing import Any

from rumination.web.worker import child_env, set_limits

MAX_PAGES = 500
MAX_CHARS = 2_000_000
MAX_TITLE = 300


def _command(timeout: float, max_memory_mb: int) -> list[str]:
    """The child's command line; the CPU limit is a backstop for a child whose parent died."""
    return [sys.executable, "-m", "rumination.web.pdf", str(max_memory_mb), str(math.ceil(timeout) + 1)]


def _fail(message: str) -> Exception:
    """A FetchError of kind "pdf" (imported lazily so that the child stays light)."""
    from rumination.web.base import FetchError

    return FetchError("pdf", message)


def _outcome(returncode: int, out: bytes, err: bytes, timeout: float, max_memory_mb: int) -> tuple[str, str]:
    """Turn the child's exit status and output into (title, text), or raise FetchError."""
    try:
        result: Any = json.loads(out)
    except ValueError:
        result = None
    if not isinstance(result, dict):
        stderr = err.decode("utf-8", "replace")
        if "MemoryError" in stderr or "Cannot allocate memory" in stderr:
            raise _fail(f"PDF needs more than {max_memory_mb} MB to parse")
        if returncode == -24:  # SIGXCPU: the CPU-time backstop fired
            raise _fail(f"PDF parsing timed out after {timeout:g} s")
        last = stderr.strip().splitlines()[-1:] or [f"the parser exited with status {returncode}"]
        raise _fail(f"could not read the PDF: {last[0][:300]}")
    error = result.get("error")
    if error == "memory":
        raise _fail(f"PDF needs more than {max_memory_mb} MB to parse")
    if error == "empty":
        raise _fail("the PDF has no extractable text (it may be scanned images)")
    if error:
        raise _fail(f"could not read the PDF: {result.get('message', error)}")
    return str(result.get("title", "")), str(result.get("text", ""))


async def extract_pdf(data: bytes, *, timeout: float = 30.0, max_memory_mb: int = 1024) -> tuple[str, str]:
    """Extract (title, text) from PDF bytes in a limited child process; raise FetchError("pdf", ...) on failure."""
    proc = await asyncio.create_subprocess_exec(
        *_command(timeout, max_memory_mb),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(),
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(data)
    except TimeoutError:
        raise _fail(f"PDF parsing timed out after {timeout:g} s") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    return _outcome(proc.returncode, out, err, timeout, max_memory_mb)


def extract_pdf_sync(data: bytes, *, timeout: float = 30.0, max_memory_mb: int = 1024) -> tuple[str, str]:
    """Blocking variant of extract_pdf, for callers running in a thread."""
    try:
        command = _command(timeout, max_memory_mb)
        done = subprocess.run(command, input=data, capture_output=True, timeout=timeout, env=child_env(), check=False)
    except subprocess.TimeoutExpired:  # run() has already killed and reaped the child
        raise _fail(f"PDF parsing timed out after {timeout:g} s") from None
    return _outcome(done.returncode, done.stdout, done.stderr, timeout, max_memory_mb)


def _parse(data: bytes) -> dict[str, str]:
    """Parse the PDF with pypdf; return {"title", "text"} or {"error", "message"}."""
    import io

    import pypdf

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            return {"error": "read", "message": "the PDF is encrypted"}
        meta = reader.metadata
        title = str(meta.title or "").strip() if meta else ""
        pages = reader.pages
        count = len(pages)
    except MemoryError:
        raise
    except Exception as exc:
        return {"error": "read", "message": f"{type(exc).__name__}: {exc}".strip()[:300]}
    parts: list[str] = []
    size, note, page_error = 0, "", ""
    for number in range(count):
        if number == MAX_PAGES:
            note = f"[truncated] stopped after {MAX_PAGES} of {count} pages"
            break
        try:
            text = (pages[number].extract_text() or "").strip()
        except MemoryError:
            raise
        except Exception as exc:  # one broken page does not spoil the rest
            page_error = page_error or f"page {number + 1}: {type(exc).__name__}: {exc}"[:300]
            continue
        if text:
            parts.append(text)
            size += len(text) + 2
        if size >= MAX_CHARS:
            note = f"[truncated] stopped at {MAX_CHARS:,} characters (page {number + 1} of {count})"
            break
    text = "\n\n".join(parts)[:MAX_CHARS]
    if not text.strip():
        return {"error": "read", "message": page_error} if page_error else {"error": "empty", "message": ""}
    if not title:
        title = next(line.strip() for line in text.splitlines() if line.strip())
    return {"title": title[:MAX_TITLE], "text": text + ("\n\n" + note if note else "")}


def main() -> None:
    """Child entry point: read PDF bytes on stdin, write the JSON result on stdout."""
    import logging

    max_memory_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    cpu_seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    data = sys.stdin.buffer.read()
    import pypdf  # noqa: F401  (imported before the limits so that they cover parsing only)

    set_limits(max_memory_mb, cpu_seconds)
    try:
        result = _parse(data)
    except (MemoryError, RecursionError) as exc:
        kind = "memory" if isinstance(exc, MemoryError) else "read"
        result = {"error": kind, "message": "the PDF is nested too deeply" if kind == "read" else ""}
    sys.stdout.buffer.write(json.dumps(result, ensure_ascii=False).encode("utf-8", "replace"))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
