#!/usr/bin/env python3
"""Capacity slots under `loadwise bench` (docs/performance.md, "Capacity slots").

compare:  slot picks against plain picks that carry a signed ticket, in alternating
          rounds (plain, slots, plain, slots, ...), each round against a dispatcher the
          bench starts in its own process (--spawn, with --secret-file); prints the
          ratio slots/plain of the dispatcher's CPU per pick and of picks/s, median
          and range over the pairs.
replicas: three `loadwise serve` replicas with the same secret; for each configuration
          (plain, slots) in alternating rounds, three benches at once, one per replica,
          each with the same fake backends (ids 0..N-1: to each dispatcher, the same
          backends connected to all three) and its own clients; prints the total
          picks/s of each round and the ratio slots/plain.

Loopback only; every process it starts is stopped at the end.

usage: scripts/slots-bench.py [compare|replicas|both] [--bin PATH] [--rounds N]
       [--duration 2s] [--conns 8] [--pipeline 1] [--backends 10] [--slots 1000000]
"""
import argparse, json, os, socket, statistics, subprocess, sys, tempfile, time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def bench_args(a, secret, slots):
    args = [a.bin, "bench", "--protocol", "v2", "--secret-file", secret, "--mode", "pick",
            "--conns", str(a.conns), "--pipeline", str(a.pipeline), "--backends", str(a.backends),
            "--duration", a.duration, "--json"]
    return args + (["--slots", str(a.slots)] if slots else [])


def report(out):
    if out.returncode != 0:
        sys.exit(f"bench failed ({out.returncode}): {out.stderr.strip()}")
    run = json.loads(out.stdout)["target"]
    errors = sum(v for v in run["requests"]["errors"].values())
    return {"ops_per_sec": run["ops_per_sec"], "server_us_per_op": run["cpu"]["server_us_per_op"],
            "errors": errors, "leases": run["backends"].get("lease_reports", 0)}


def summary(name, values, digits=3):
    m, lo, hi = statistics.median(values), min(values), max(values)
    return f"{name} median {m:.{digits}f}, range {lo:.{digits}f} .. {hi:.{digits}f}"


def compare(a, secret):
    pairs = []
    for r in range(a.rounds):
        round_ = {}
        for slots in (False, True):
            cmd = bench_args(a, secret, slots) + ["--spawn"]
            if a.server_threads:
                cmd += ["--server-threads", str(a.server_threads)]
            round_[slots] = report(subprocess.run(cmd, capture_output=True, text=True, timeout=120))
        plain, slot = round_[False], round_[True]
        print(f"round {r + 1}: plain {plain['ops_per_sec']:.0f} picks/s {plain['server_us_per_op'] * 1000:.0f} ns/pick"
              f" (errors {plain['errors']}); slots {slot['ops_per_sec']:.0f} picks/s"
              f" {slot['server_us_per_op'] * 1000:.0f} ns/pick (errors {slot['errors']}, lease reports {slot['leases']})",
              flush=True)
        pairs.append((slot["server_us_per_op"] / plain["server_us_per_op"], slot["ops_per_sec"] / plain["ops_per_sec"]))
    print("compare, slots / plain (signed tickets in both):")
    print("  " + summary("dispatcher CPU per pick", [p[0] for p in pairs]))
    print("  " + summary("picks/s", [p[1] for p in pairs]))


def start_replicas(a, secret):
    ports, procs = [free_port() for _ in range(3)], []
    for port in ports:
        procs.append(subprocess.Popen(
            [a.bin, "serve", "--listen", f"127.0.0.1:{port}", "--admin-listen", "off",
             "--auth-secret-file", secret], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    deadline = time.time() + 10
    for port in ports:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    stop(procs)
                    sys.exit(f"replica on port {port} did not start")
                time.sleep(0.05)
    return ports, procs


def stop(procs):
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def replicas(a, secret):
    totals = {False: [], True: []}
    for r in range(a.rounds):
        for slots in (False, True):
            ports, servers = start_replicas(a, secret)
            try:
                benches = [subprocess.Popen(bench_args(a, secret, slots) + ["--server", f"127.0.0.1:{port}"],
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                           for port in ports]
                runs = []
                for b in benches:
                    out, err = b.communicate(timeout=120)
                    runs.append(report(subprocess.CompletedProcess(b.args, b.returncode, out, err)))
            finally:
                stop(servers)
            total = sum(run["ops_per_sec"] for run in runs)
            totals[slots].append(total)
            label = "slots" if slots else "plain"
            each = ", ".join(f"{run['ops_per_sec']:.0f}" for run in runs)
            errors = sum(run["errors"] for run in runs)
            print(f"round {r + 1} {label}: {total:.0f} picks/s over three replicas ({each}; errors {errors})",
                  flush=True)
    ratios = [s / p for p, s in zip(totals[False], totals[True])]
    print("replicas, total picks/s over three:")
    print("  " + summary("plain", totals[False], 0))
    print("  " + summary("slots", totals[True], 0))
    print("  " + summary("slots / plain", ratios))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", default="both", choices=["compare", "replicas", "both"])
    parser.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release/loadwise"))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", default="2s")
    parser.add_argument("--conns", type=int, default=8)
    parser.add_argument("--pipeline", type=int, default=1)
    parser.add_argument("--backends", type=int, default=10)
    parser.add_argument("--slots", type=int, default=1_000_000, help="each fake backend's capacity")
    parser.add_argument("--server-threads", type=int, default=None, help="compare: the spawned dispatcher's threads")
    a = parser.parse_args()
    with tempfile.NamedTemporaryFile("w", suffix=".secret") as f:
        f.write(os.urandom(24).hex() + "\n")
        f.flush()
        if a.what in ("compare", "both"):
            compare(a, f.name)
        if a.what in ("replicas", "both"):
            replicas(a, f.name)


if __name__ == "__main__":
    main()
