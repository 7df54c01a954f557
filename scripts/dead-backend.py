#!/usr/bin/env python3
"""How long a dead backend keeps receiving clients: without checks or reports, with the
agent's tcp check (defaults), and with clients' failure reports (pick --connect).
Real binaries, loopback only, every process stopped at the end."""
import json, os, socket, subprocess, sys, time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/loadwise"

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def start(args):
    return subprocess.Popen([BIN] + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

def pick(port, extra=()):
    out = subprocess.run([BIN, "pick", "--server", f"127.0.0.1:{port}", "--service", "game", "--json", *extra],
                         capture_output=True, text=True, timeout=10)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {}, out.returncode
    except Exception:
        return {}, out.returncode

def setup(check):
    port, admin = free_port(), free_port()
    procs = [start(["serve", "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"])]
    time.sleep(0.5)
    dead_port, live_port = free_port(), free_port()
    dead_listener = socket.socket(); dead_listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    dead_listener.bind(("127.0.0.1", dead_port)); dead_listener.listen(64)
    live = socket.socket(); live.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    live.bind(("127.0.0.1", live_port)); live.listen(1024)
    extra = ["--check", "tcp"] if check else []
    for p in (dead_port, live_port):
        procs.append(start(["agent", "--server", f"127.0.0.1:{port}", "--advertise", f"127.0.0.1:{p}",
                            "--service", "game", *extra]))
    # both in rotation
    deadline = time.time() + 15
    want = {f"127.0.0.1:{dead_port}", f"127.0.0.1:{live_port}"}
    seen = set()
    while time.time() < deadline and not want <= seen:
        answer, _ = pick(port)
        seen.add(answer.get("backend"))
        time.sleep(0.05)
    assert want <= seen, f"both backends in rotation: {seen}"
    return port, procs, dead_listener, dead_port, live

def addr_of(answer):
    return answer.get("backend") or answer.get("assigned") or answer.get("connected") or answer.get("address")

def run(name, check, connect):
    port, procs, dead_listener, dead_port, live = setup(check)
    dead = f"127.0.0.1:{dead_port}"
    dead_listener.close()  # the backend dies; its agent stays up
    t0 = time.time()
    sent_dead, total, last_dead = 0, 0, None
    client = 2
    while time.time() - t0 < 10:
        extra = ["--connect", "--bind", f"127.0.0.{client}"] if connect else []
        client = client + 1 if client < 250 else 2
        answer, code = pick(port, extra)
        total += 1
        named = [f.get("endpoint") for f in answer.get("failed", [])] if connect else [addr_of(answer)]
        if dead in named:
            sent_dead += 1; last_dead = time.time() - t0
        time.sleep(0.02)
    for p in procs: p.terminate()
    for p in procs: p.wait(timeout=10)
    live.close()
    print(f"{name}: {sent_dead} of {total} clients sent to the dead backend in 10 s; last at "
          f"{'never' if last_dead is None else f'{last_dead:.2f} s'} after it died", flush=True)

print(f"binary: {BIN}", flush=True)
run("no check, plain picks", check=False, connect=False)
run("agent --check tcp (1 s, fall 2), plain picks", check=True, connect=False)
run("no check, pick --connect (reports)", check=False, connect=True)
