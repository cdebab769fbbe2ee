"""Figures for the serving hardening, measured against a live `lkd-run serve` on loopback.

    $LKD_PYTHON scripts/serve_figures.py [--lkd-run PATH] [--model M.onnx]
                                         [--requests 200] [--flood 500] [--cap 64]
                                         [--soak 120 --soak-clients 4 --soak-max 200000]

Prints three things (not asserted; the tests in runtime/tests/integration/serve_*.rs do that):
1. a normal client's latency (POST /v1/classify, one connection per request, sequential), p50 /
   p99 / max, with no other clients and then while --flood connections each hold a half-sent
   request (the server runs with --max-connections --cap, so the flood is evicted oldest first);
2. the time from SIGTERM to the process exiting, with a half-sent header, a half-sent body and a
   finished request's keep-alive connection open, against the grace period (2 s and the default);
3. the largest |difference| between the class probabilities of the official KServe v2 client
   (tritonclient.http, BYTES input: encoded PNGs the server decodes) and `lkd-run predict --json`
   on the same files.
4. with --soak SECONDS (default 0: skipped): --soak-clients keep-alive clients on loopback
   (127.0.0.1 only) sending POST /v1/classify back to back for SECONDS or --soak-max requests in
   all, whichever comes first; the server's RSS (VmRSS) after a 200-request warm-up, after
   --soak-baseline seconds of the soak and at the end (growth since the baseline, in %), its peak
   (VmHWM), and the latency p50 / p99 / max over every request; exits non-zero when the RSS
   grew more than --soak-max-growth % (default 5) since the baseline or any answer was not 200.
Without --model it generates the test fixture `gray28.onnx` (runtime/tests/fixtures/make_models.py).
Checked with Python 3.11, numpy 2.4, Pillow 12, tritonclient 2.73.
"""

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start(lkd_run, model, *flags):
    """Starts `lkd-run serve` on a free loopback port; returns (process, "host:port")."""
    proc = subprocess.Popen(
        [lkd_run, "serve", model, "--addr", "127.0.0.1:0", "--threads", "1", *flags],
        stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if " on http://" in line:
            return proc, line.split(" on http://")[1].split()[0]
    raise SystemExit(f"lkd-run serve exited before serving (rc {proc.wait()})")


def request(addr, method, path, body=b"", timeout=30.0):
    """One request on a fresh connection; returns (status, body)."""
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head, _, payload = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


def png(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)),
                    rng.integers(0, 255, (h, w))], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def latencies(addr, body, n):
    ms = []
    for i in range(n):
        t = time.perf_counter()
        status, payload = request(addr, "POST", "/v1/classify", body)
        ms.append((time.perf_counter() - t) * 1e3)
        if status != 200:
            raise SystemExit(f"request {i}: {status} {payload[:200]!r}")
    ms.sort()
    return ms


def pct(ms, p):
    return ms[round((len(ms) - 1) * p)]


def metric(addr, name):
    text = request(addr, "GET", "/metrics")[1].decode()
    return next(line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(name))


def flood_figures(args, model):
    proc, addr = start(args.lkd_run, model, "--max-connections", str(args.cap))
    try:
        body = png(40, 40, 1)
        latencies(addr, body, 10)  # warm-up
        quiet = latencies(addr, body, args.requests)
        host, port = addr.rsplit(":", 1)
        held = []
        for _ in range(args.flood):
            s = socket.create_connection((host, int(port)))
            try:
                s.sendall(b"GET /v2/health/live HTTP/1.1\r\n")  # and never the rest
            except OSError:
                pass  # evicted already
            held.append(s)
        flooded = latencies(addr, body, args.requests)
        evicted = metric(addr, 'lkd_connections_closed_total{reason="evicted"}')
        open_now = metric(addr, "lkd_open_connections ")
        for s in held:
            s.close()
    finally:
        proc.terminate()
        proc.wait()
    print(f"1. normal client, {args.requests} sequential POST /v1/classify (40x40 PNG, fresh connection each):")
    print(f"   alone:                         p50 {pct(quiet, .5):6.2f} ms  p99 {pct(quiet, .99):6.2f} ms  max {quiet[-1]:6.2f} ms")
    print(f"   {args.flood} half-sent connections held: p50 {pct(flooded, .5):6.2f} ms  p99 {pct(flooded, .99):6.2f} ms  "
          f"max {flooded[-1]:6.2f} ms  (cap {args.cap}: {evicted} evicted, {open_now} open at the end)")


def shutdown_figure(args, model, grace_ms):
    flags = ["--header-timeout-ms", "60000", "--body-timeout-ms", "60000"]
    if grace_ms is not None:
        flags += ["--grace-ms", str(grace_ms)]
    proc, addr = start(args.lkd_run, model, *flags)
    host, port = addr.rsplit(":", 1)
    head = socket.create_connection((host, int(port)))
    head.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n")
    body = socket.create_connection((host, int(port)))
    body.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n\x89PNG")
    keep = socket.create_connection((host, int(port)))
    keep.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    keep.recv(4096)
    time.sleep(0.2)
    t = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=60)
    took = (time.perf_counter() - t) * 1e3
    for s in (head, body, keep):
        s.close()
    label = f"{grace_ms} ms" if grace_ms is not None else "default (10000 ms)"
    print(f"   grace {label:>18}: exited {took:7.1f} ms after SIGTERM (rc {rc})")


def triton_figure(args, model, tmp):
    import tritonclient.http as httpclient
    paths = []
    for i, (w, h) in enumerate([(28, 28), (29, 31), (64, 40), (300, 200), (17, 90), (512, 512)]):
        p = os.path.join(tmp, f"img{i}.png")
        with open(p, "wb") as f:
            f.write(png(w, h, i))
        paths.append(p)
    out = subprocess.run([args.lkd_run, "predict", model, *paths, "--json", "--top-k", "1000",
                          "--threads", "1"], check=True, capture_output=True, text=True).stdout
    predicted = json.loads(out)["results"]
    proc, addr = start(args.lkd_run, model)
    try:
        client = httpclient.InferenceServerClient(url=addr)
        name = os.path.splitext(os.path.basename(model))[0]
        meta = client.get_model_metadata(name)
        out_name = meta["outputs"][0]["name"]
        blobs = np.array([open(p, "rb").read() for p in paths], dtype=np.object_)
        inp = httpclient.InferInput("encoded_image", [len(paths)], "BYTES")
        inp.set_data_from_numpy(blobs, binary_data=True)
        logits = client.infer(name, [inp]).as_numpy(out_name).astype(np.float64)
    finally:
        proc.terminate()
        proc.wait()
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    worst = 0.0
    for row, result in zip(probs, predicted):
        for p in result["predictions"]:
            worst = max(worst, abs(row[p["index"]] - p["prob"]))
    print(f"3. tritonclient BYTES infer vs `lkd-run predict`, {len(paths)} PNGs ({probs.shape[1]} classes): "
          f"max |Δ probability| = {worst:.3g}")


def rss_kb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":"))


def soak_figure(args, model):
    import http.client
    import threading
    proc, addr = start(args.lkd_run, model)
    host, port = addr.rsplit(":", 1)
    assert host == "127.0.0.1", addr
    body = png(40, 40, 1)
    failures, lock = [], threading.Lock()
    times = [[] for _ in range(args.soak_clients)]
    try:
        latencies(addr, body, 200)  # warm-up: allocator pools, ORT arenas
        rss_start = rss_kb(proc.pid)
        deadline = time.monotonic() + args.soak
        per_client = args.soak_max // args.soak_clients

        def client(ms):
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            while time.monotonic() < deadline and len(ms) < per_client:
                t = time.perf_counter()
                conn.request("POST", "/v1/classify", body, {"Content-Type": "image/png"})
                r = conn.getresponse()
                r.read()
                ms.append((time.perf_counter() - t) * 1e3)
                if r.status != 200:
                    with lock:
                        failures.append(r.status)
                    return
            conn.close()

        threads = [threading.Thread(target=client, args=(ms,)) for ms in times]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        # The baseline is taken once the 4 clients have run a while (threads, buffers, arenas
        # sized for concurrent load); growth after that is what a leak would show.
        samples = []
        while any(t.is_alive() for t in threads):
            time.sleep(1)
            samples.append((time.monotonic() - t0, rss_kb(proc.pid)))
        for t in threads:
            t.join()
        took = time.monotonic() - t0
        rss0 = next((r for t, r in samples if t >= args.soak_baseline), samples[0][1])
        rss1, peak = rss_kb(proc.pid), rss_kb(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        proc.wait()
    ms = sorted(m for c in times for m in c)
    if failures:
        raise SystemExit(f"soak: {len(failures)} non-200 answers, first {failures[0]}")
    print(f"4. soak: {args.soak_clients} keep-alive clients for {took:.0f} s, {len(ms)} requests "
          f"({len(ms) / took:.0f}/s), all 200: p50 {pct(ms, .5):.2f} ms  p99 {pct(ms, .99):.2f} ms  "
          f"max {ms[-1]:.2f} ms; RSS {rss_start / 1024:.1f} MB after a sequential warm-up, "
          f"{rss0 / 1024:.1f} MB at {args.soak_baseline:.0f} s, {rss1 / 1024:.1f} MB at the end "
          f"({100 * (rss1 - rss0) / rss0:+.2f} % since {args.soak_baseline:.0f} s), peak {peak / 1024:.1f} MB")
    growth = 100 * (rss1 - rss0) / rss0
    if growth > args.soak_max_growth:
        raise SystemExit(f"soak: RSS grew {growth:.2f} % since {args.soak_baseline:.0f} s, "
                         f"over the {args.soak_max_growth} % bound")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lkd-run", help="default: target/release/lkd-run, else target/debug/lkd-run")
    ap.add_argument("--model")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--flood", type=int, default=500)
    ap.add_argument("--cap", type=int, default=64)
    ap.add_argument("--soak", type=float, default=0, help="seconds (0: no soak)")
    ap.add_argument("--soak-clients", type=int, default=4)
    ap.add_argument("--soak-max", type=int, default=200000, help="requests in all, at most")
    ap.add_argument("--soak-baseline", type=float, default=10, help="seconds into the soak the RSS baseline is taken")
    ap.add_argument("--soak-max-growth", type=float, default=5.0,
                    help="percent of RSS growth since the baseline that fails the soak")
    ap.add_argument("--only-soak", action="store_true", help="skip figures 1-3")
    args = ap.parse_args()
    if args.lkd_run is None:
        built = [os.path.join(REPO, "target", p, "lkd-run") for p in ("release", "debug")]
        args.lkd_run = next((b for b in built if os.path.exists(b)), built[0])
    if not os.path.exists(args.lkd_run):
        raise SystemExit(f"{args.lkd_run} not found: build it (cargo build --release -p lkd-runtime) or pass --lkd-run")
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            subprocess.run([sys.executable, os.path.join(REPO, "runtime/tests/fixtures/make_models.py"),
                            "models", tmp], check=True)
            model = os.path.join(tmp, "gray28.onnx")
        print(f"{args.lkd_run}; model {model}; {os.cpu_count()} cores; "
              f"load average {os.getloadavg()[0]:.2f}")
        if not args.only_soak:
            flood_figures(args, model)
            print("2. shutdown with a half-sent header, a half-sent body and an idle keep-alive connection open:")
            shutdown_figure(args, model, 2000)
            shutdown_figure(args, model, None)
            triton_figure(args, model, tmp)
        if args.soak > 0:
            soak_figure(args, model)


if __name__ == "__main__":
    main()
