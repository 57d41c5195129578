"""A bounded hostile probe of a running graft server (issue 9), standard library only.

Run by crates/graft/tests/probe.rs against `graft up` on loopback, with a config whose
`server.read_timeout_secs` is short (READ_TIMEOUT below) and `server.max_connections` small
(MAX_CONNECTIONS), so every class of input finishes in seconds:

- request smuggling through Transfer-Encoding / Content-Length disagreements;
- slow clients: headers or a body sent a byte at a time, and clients that say nothing;
- header floods: too many headers, one enormous header;
- many idle connections, more than the server serves at once;
- concurrent re-index + search + adapter replacement + generation on that adapter;
- the findings of the first probe, once more: bad JSON, token ids, unsupported fields.

Every probe is bounded in count and time, targets 127.0.0.1 only, and after each class the
server must still answer /health. Prints one line per check and a closing
"probe: N passed, M failed" line; exits 1 on any failure.

Usage: probe.py HOST:PORT ADMIN_KEY PROJECT ADAPTER ADAPTER_DIR SPARE_DIR
"""

import json
import os
import shutil
import socket
import sys
import threading
import time

ADDR, KEY, PROJECT, ADAPTER, ADAPTER_DIR, SPARE_DIR = sys.argv[1:7]
HOST, PORT = ADDR.rsplit(":", 1)
PORT = int(PORT)
READ_TIMEOUT = float(os.environ.get("PROBE_READ_TIMEOUT", "2"))
MAX_CONNECTIONS = int(os.environ.get("PROBE_MAX_CONNECTIONS", "32"))
MODEL = os.environ.get("PROBE_MODEL", "smollm2-135m-instruct")

results = {"passed": 0, "failed": 0}
lock = threading.Lock()


def check(name, ok, detail=""):
    with lock:
        results["passed" if ok else "failed"] += 1
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else ": " + str(detail)[:500]), flush=True)


def connect(timeout=10.0):
    s = socket.create_connection((HOST, PORT), timeout=timeout)
    s.settimeout(timeout)
    return s


def read_all(s, limit=10.0):
    """Everything the server sends until it closes (or `limit` seconds pass)."""
    data = b""
    end = time.time() + limit
    while time.time() < end:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        except (ConnectionResetError, BrokenPipeError):
            break
        if not chunk:
            break
        data += chunk
    return data


def statuses(data):
    """The status codes of the HTTP responses in `data`, in order."""
    codes = []
    for line in data.split(b"\r\n"):
        if line.startswith(b"HTTP/1.1 ") and len(line) >= 12:
            try:
                codes.append(int(line[9:12]))
            except ValueError:
                pass
    return codes


def raw(request, limit=10.0):
    s = connect(timeout=limit)
    try:
        s.sendall(request)
        return read_all(s, limit)
    finally:
        s.close()


def request(method, path, body=None, timeout=60.0):
    """One request with the admin key: (status, parsed JSON or text)."""
    payload = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {ADDR}\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode()
    data = raw(head + payload, timeout)
    head_end = data.find(b"\r\n\r\n")
    codes = statuses(data[: head_end + 4]) if head_end >= 0 else []
    if not codes:
        return 0, data[:200]
    body = data[head_end + 4 :]
    if b"transfer-encoding: chunked" in data[:head_end].lower():
        body = dechunk(body)
    try:
        return codes[0], json.loads(body)
    except ValueError:
        return codes[0], body.decode(errors="replace")


def dechunk(body):
    out = b""
    while body:
        line, _, rest = body.partition(b"\r\n")
        try:
            size = int(line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


def healthy(after):
    status, _ = request("GET", "/health", timeout=10)
    check(f"{after}: the server still answers /health", status == 200, status)


def chat_body(model=MODEL, max_tokens=2, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens, "temperature": 0}
    body.update(extra)
    return body


# --- request smuggling -----------------------------------------------------------------------


def smuggling():
    hidden = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() + b"\r\n\r\n"
    body = json.dumps(chat_body()).encode()

    # CL.TE: a front end reading Content-Length would see one request; one reading
    # Transfer-Encoding sees the hidden one after the empty chunk. graft must answer one
    # request and close the connection (RFC 9112 6.1), never the hidden one.
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    payload = chunked + hidden
    req = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
        b"\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(payload) + payload
    )
    codes = statuses(raw(req, 30))
    check("CL.TE: one answer, connection closed, the hidden request is not served", len(codes) == 1, codes)

    # TE.CL: the length covers only the chunk-size line.
    req = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
        b"\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n" + chunked + hidden
    )
    codes = statuses(raw(req, 30))
    check("TE.CL: one answer, connection closed", len(codes) == 1, codes)

    for name, headers in [
        ("an obfuscated coding (xchunked)", b"Transfer-Encoding: xchunked\r\n"),
        ("chunked not last (chunked, gzip)", b"Transfer-Encoding: chunked, gzip\r\n"),
        ("a space before the colon", b"Transfer-Encoding : chunked\r\n"),
        ("two different Content-Lengths", b"Content-Length: 5\r\nContent-Length: 6\r\n"),
        ("a negative Content-Length", b"Content-Length: -1\r\n"),
        ("Content-Length with a plus sign", b"Content-Length: +5\r\n"),
    ]:
        req = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n" + chunked + hidden
        codes = statuses(raw(req, 10))
        check(f"{name}: 400 and nothing else", codes == [400], codes)

    req = b"POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
    codes = statuses(raw(req, 10))
    check("HTTP/1.0 with Transfer-Encoding: 400", codes == [400], codes)

    bad_chunk = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
        b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
    )
    codes = statuses(raw(bad_chunk, 10))
    check("an invalid chunk size: 400, or the connection closed", codes in ([400], []), codes)
    healthy("smuggling")


# --- slow clients ------------------------------------------------------------------------------


def slow_body():
    """A body sent a byte every half second: 408 once server.read_timeout_secs has passed."""
    body = json.dumps(chat_body()).encode()
    s = connect(timeout=READ_TIMEOUT + 10)
    started = time.time()
    s.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
        b"\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    answered = b""
    s.setblocking(False)
    for byte in body:
        try:
            s.sendall(bytes([byte]))
        except (BlockingIOError, BrokenPipeError, ConnectionResetError):
            break
        try:
            answered += s.recv(65536)
            if answered:
                break
        except BlockingIOError:
            pass
        except ConnectionResetError:
            break
        if time.time() - started > READ_TIMEOUT + 8:
            break
        time.sleep(0.5)
    s.setblocking(True)
    s.settimeout(5)
    answered += read_all(s, 5)
    s.close()
    elapsed = time.time() - started
    check("a body at a byte a second gets 408", statuses(answered)[:1] == [408], answered[:200])
    check("...within the read timeout", elapsed < READ_TIMEOUT + 6, f"{elapsed:.1f} s")


def slow_headers():
    """Headers a byte at a time: the connection is closed after the read timeout."""
    s = connect(timeout=READ_TIMEOUT + 10)
    started = time.time()
    closed = False
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    for byte in head:
        try:
            s.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        if time.time() - started > READ_TIMEOUT + 6:
            break
        time.sleep(0.2)
    if not closed:
        s.settimeout(3)
        try:
            data = s.recv(65536)
            closed = data == b"" or b" 408 " in data
        except socket.timeout:
            closed = False
        except OSError:
            closed = True
    s.close()
    elapsed = time.time() - started
    check("headers at a byte at a time: the connection is closed", closed and elapsed < READ_TIMEOUT + 8, f"{elapsed:.1f} s")


def silent_client():
    s = connect(timeout=READ_TIMEOUT + 10)
    started = time.time()
    data = read_all(s, READ_TIMEOUT + 8)
    s.close()
    elapsed = time.time() - started
    check("a client that says nothing is closed after the read timeout", elapsed < READ_TIMEOUT + 6 and statuses(data) in ([], [408]), f"{elapsed:.1f} s {data[:100]}")


def slow_clients():
    threads = [threading.Thread(target=f) for f in (slow_body, slow_headers, silent_client)]
    for t in threads:
        t.start()
    # Meanwhile, everyone else is served.
    started = time.time()
    status, body = request("POST", "/v1/chat/completions", chat_body(), timeout=60)
    check("a normal request is served while slow clients hold connections", status == 200, body)
    check("...without waiting for them", time.time() - started < READ_TIMEOUT + 30, time.time() - started)
    for t in threads:
        t.join()
    healthy("slow clients")


# --- header floods -----------------------------------------------------------------------------


def header_floods():
    many = b"".join(b"X-Flood-%d: %d\r\n" % (i, i) for i in range(500))
    codes = statuses(raw(b"GET /health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n", 10))
    check("500 headers: 431", codes == [431], codes)
    big = b"X-Big: " + b"a" * (1024 * 1024) + b"\r\n"
    try:
        codes = statuses(raw(b"GET /health HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n", 10))
    except (BrokenPipeError, ConnectionResetError):
        codes = []
    check("a 1 MB header: 431 or the connection closed", codes in ([431], []), codes)
    fine = b"".join(b"X-Ok-%d: %d\r\n" % (i, i) for i in range(80))
    codes = statuses(raw(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + fine + b"\r\n", 10))
    check("80 headers are fine", codes == [200], codes)
    healthy("header floods")


# --- many idle connections ---------------------------------------------------------------------


def idle_connections():
    idle = []
    for _ in range(MAX_CONNECTIONS * 3):
        try:
            idle.append(connect(timeout=READ_TIMEOUT + 10))
        except OSError:
            break
    check(f"{len(idle)} idle connections opened", len(idle) >= MAX_CONNECTIONS * 2, len(idle))
    started = time.time()
    status, _ = request("GET", "/health", timeout=READ_TIMEOUT * 4 + 10)
    waited = time.time() - started
    check("a request beyond max_connections idle ones is served", status == 200, status)
    check("...once idle ones time out", waited < READ_TIMEOUT * 4 + 5, f"{waited:.1f} s")
    time.sleep(READ_TIMEOUT + 1)
    closed = 0
    for s in idle:
        s.settimeout(0.2)
        try:
            # The server closed it (perhaps after a 408): the read returns at once.
            s.recv(1024)
            closed += 1
        except socket.timeout:
            pass
        except OSError:
            closed += 1
        s.close()
    check("idle connections are closed by the server", closed >= MAX_CONNECTIONS, f"{closed} of {len(idle)}")
    healthy("idle connections")


# --- concurrent re-index, search, adapter replacement ------------------------------------------


def concurrent_admin():
    stop = time.time() + 20
    seen = {}
    bad = []

    def loop(name, call, allowed):
        while time.time() < stop:
            status, body = call()
            time.sleep(0.02)
            seen.setdefault(name, {}).setdefault(status, 0)
            seen[name][status] += 1
            if status not in allowed:
                bad.append((name, status, str(body)[:300]))

    versions = [os.path.join(SPARE_DIR, "v1"), os.path.join(SPARE_DIR, "v2")]

    def replace():
        replace.n = getattr(replace, "n", 0) + 1
        source = versions[replace.n % 2]
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            tmp = os.path.join(ADAPTER_DIR, "." + name + ".tmp")
            shutil.copyfile(os.path.join(source, name), tmp)
            os.replace(tmp, os.path.join(ADAPTER_DIR, name))
        return request("POST", "/v1/load_lora_adapter", {"lora_name": ADAPTER})

    loops = [
        ("reindex", lambda: request("POST", f"/v1/projects/{PROJECT}/reindex", {}), {200, 409}),
        ("search", lambda: request("POST", f"/v1/projects/{PROJECT}/search", {"query": "TokenVault rotate keys", "k": 5}), {200, 503}),
        ("adapter replacement", replace, {200, 503}),
        ("chat on the adapter", lambda: request("POST", "/v1/chat/completions", chat_body(model=ADAPTER, max_tokens=4)), {200, 429, 503}),
        ("chat on the project", lambda: request("POST", "/v1/chat/completions", chat_body(model=PROJECT, max_tokens=4)), {200, 429, 503}),
    ]
    threads = [threading.Thread(target=loop, args=spec) for spec in loops]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(f"concurrent re-index, search, adapter replacement and chat: only expected answers {seen}", not bad, bad[:5])
    check("every kind of call succeeded at least once", all(s.get(200, 0) > 0 for s in seen.values()), seen)
    status, body = request("POST", f"/v1/projects/{PROJECT}/search", {"query": "TokenVault", "k": 5})
    check("search works after the storm", status == 200 and len(body.get("data", body.get("hits", []))) > 0, body)
    status, body = request("POST", "/v1/chat/completions", chat_body(model=ADAPTER))
    check("the adapter serves after the storm", status == 200, body)
    healthy("concurrent admin")


# --- the first probe's findings, once more -----------------------------------------------------


def findings():
    good = json.dumps(chat_body()).encode()
    status, body = request("POST", "/v1/chat/completions", good + b"garbage")
    check("trailing garbage: 400", status == 400, body)
    status, body = request("POST", "/v1/completions", {"model": MODEL, "prompt": [49152], "max_tokens": 1})
    check("a token id outside the vocabulary: 400 naming it", status == 400 and "49152" in json.dumps(body), body)
    check("...without a backtrace", "backtrace" not in json.dumps(body).lower(), body)
    status, body = request("POST", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "\U0001F600"}], "max_tokens": 4, "temperature": 0})
    check("max_tokens inside an emoji: 200, finish_reason length", status == 200 and body["choices"][0]["finish_reason"] == "length", body)
    status, body = request("POST", "/v1/chat/completions", chat_body(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "nope"}}}}}))
    check("an unusable JSON schema: 400 naming response_format", status == 400 and body["error"]["param"] == "response_format", body)
    for field, value in [("functions", [{"name": "f"}]), ("tool_choice", "required")]:
        status, body = request("POST", "/v1/chat/completions", chat_body(**{field: value}))
        check(f"chat with {field} (legacy, or no tools to choose from): 400", status == 400 and body["error"]["param"] == field, body)
    for name, payload in [
        ("a non-object body", b"[1, 2, 3]"),
        ("deeply nested JSON", b"[" * 100000 + b"]" * 100000),
        ("invalid UTF-8", b'{"model": "\xff\xfe", "messages": []}'),
        ("a huge max_tokens", json.dumps(chat_body(max_tokens=2 ** 40)).encode()),
        ("a negative temperature", json.dumps(chat_body(temperature=-1)).encode()),
        ("an unknown role", json.dumps(chat_body(messages=[{"role": "wizard", "content": "x"}])).encode()),
    ]:
        status, body = request("POST", "/v1/chat/completions", payload)
        check(f"{name}: a 4xx in OpenAI's shape", 400 <= status < 500 and isinstance(body, dict) and "error" in body, (status, str(body)[:200]))
    status, body = request("POST", "/v1/chat/completions", chat_body(messages=[{"role": "user", "content": "a\u0000b\u202e\ufeff"}]))
    check("NUL and control characters in a message are text like any other: 200", status == 200, body)
    for path in ["/v1/../../etc/passwd", "/v1/projects/..%2f..%2fetc/search", "/%00", "/v1/models?" + "a=b&" * 2000]:
        codes = statuses(raw(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n\r\n".encode(), 10))
        check(f"GET {path[:40]}: answered without a 5xx", len(codes) == 1 and codes[0] < 500, codes)
    healthy("findings")


def main():
    started = time.time()
    for section in (smuggling, header_floods, findings, slow_clients, idle_connections, concurrent_admin):
        print(f"== {section.__name__}", flush=True)
        try:
            section()
        except Exception as e:  # a probe that crashes is a failed check, not a crashed run
            check(f"{section.__name__} ran to its end", False, repr(e))
    print(f"probe took {time.time() - started:.0f} s", flush=True)
    print(f"probe: {results['passed']} passed, {results['failed']} failed", flush=True)
    sys.exit(1 if results["failed"] else 0)


if __name__ == "__main__":
    main()
