#!/usr/bin/env python3
"""Chaos and soak: sav under a sipp load of ~100 concurrent calls while
faults are injected, then what it survived.

    python3 scripts/chaos.py [--calls 300] [--concurrent 100] [--seconds 25]

Not part of the test suite (it takes a few minutes and root: everything
runs in a network namespace of its own, `savchaos`). It builds sav and
the fake providers (release), then, during the load:

  - kills the registrar (a small always-200 one of this script's) and
    starts it again,
  - makes the fake providers fail (LLM 500, TTS 500), stall and recover,
  - sends SIGHUP to sav (reload),
  - floods OPTIONS from another address (127.0.0.2),
  - drops, duplicates, reorders and delays the calls' RTP, both ways, for
    15 s: sipp calls through scripts/rtp_relay.py (ours: this
    kernel may have no netem), which carries every call's media,

and afterwards reports: faults injected, calls admitted and completed
(sipp), call records complete (every record has its end and outcome),
bot-turn silences over 700 ms (sav's own histogram), what sav's jitter
buffers saw of the damage (reordered, duplicates, concealed), sav's RSS and open
descriptors before the load and after it. The report goes to
target/chaos-report.txt.
"""

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NS = "savchaos"
SIP = 27060
METRICS = 27069
PROVIDERS = 27080
REGISTRAR = 27090
SIPP = 27061
SIPP_MEDIA = 27100
RELAY = 27070
RELAY_MEDIA = 40000
RTP_MIN, RTP_MAX = 28000, 29999


def sh(*args, check=True, **kw):
    return subprocess.run(list(args), check=check, **kw)


def ns(*args):
    return ["ip", "netns", "exec", NS, *args]


class Registrar:
    """A registrar that answers every REGISTER 200 (with the Contact and
    the Expires asked), in the namespace; stop() is the kill."""

    def __init__(self):
        self.proc = None

    def start(self):
        # The socket is bound in the namespace by a child python.
        code = f"""
import socket, re
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", {REGISTRAR}))
while True:
    data, addr = s.recvfrom(65535)
    text = data.decode("utf-8", "replace")
    if not text.startswith("REGISTER "):
        continue
    keep = [l for l in text.split("\\r\\n") if re.match(r"(?i)(via|from|to|call-id|cseq|contact|expires)\\s*:", l)]
    out = "SIP/2.0 200 OK\\r\\n" + "\\r\\n".join(l + (";tag=reg" if l.lower().startswith("to:") and "tag=" not in l else "") for l in keep) + "\\r\\nContent-Length: 0\\r\\n\\r\\n"
    s.sendto(out.encode(), addr)
"""
        self.proc = subprocess.Popen(ns("python3", "-c", code))

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def metrics_text():
    out = subprocess.run(
        ns("curl", "-s", f"http://127.0.0.1:{METRICS}/metrics"),
        capture_output=True,
        text=True,
    )
    return out.stdout


def proc_stats(pid):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


def tell(fakes, commands):
    """Switches the fake providers' faults (lines on their stdin)."""
    fakes.stdin.write(commands)
    fakes.stdin.flush()


def fd_kinds(pid):
    """What a process's descriptors are: sockets, the store's files, others."""
    kinds = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            kind = "socket"
        elif "sav.db" in target:
            kind = "store"
        else:
            kind = "other"
        kinds[kind] = kinds.get(kind, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))


def options_flood(count):
    code = f"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.2", 0))
port = s.getsockname()[1]
for n in range({count}):
    msg = ("OPTIONS sip:sav@127.0.0.1:{SIP} SIP/2.0\\r\\nVia: SIP/2.0/UDP 127.0.0.2:%d;branch=z9hG4bKc%d\\r\\n"
           "From: <sip:f@127.0.0.2>;tag=%d\\r\\nTo: <sip:sav@127.0.0.1>\\r\\nCall-ID: chaos%d@x\\r\\nCSeq: 1 OPTIONS\\r\\n"
           "Max-Forwards: 70\\r\\nContent-Length: 0\\r\\n\\r\\n") % (port, n, n, n)
    s.sendto(msg.encode(), ("127.0.0.1", {SIP}))
    if n % 200 == 0:
        time.sleep(0.02)
"""
    sh(*ns("python3", "-c", code))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrent", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=25, help="each call's length")
    parser.add_argument(
        "--settle", type=int, default=100,
        help="seconds after the last call before descriptors are counted (idle HTTP connections to the providers close after 90 s)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("chaos.py needs root (a network namespace)")
    for tool in ["sipp", "espeak-ng", "sox", "curl", "ip"]:
        if shutil.which(tool) is None:
            sys.exit(f"chaos.py needs {tool}")

    work = os.path.join(REPO, "target", "chaos")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    sh("cargo", "build", "--release", "--bin", "sav", "--example", "fake_providers", cwd=REPO)
    sav_bin = os.path.join(REPO, "target", "release", "sav")
    fakes_bin = os.path.join(REPO, "target", "release", "examples", "fake_providers")

    # The caller's voice.
    raw = os.path.join(work, "raw.wav")
    sh("espeak-ng", "-v", "fr", "-w", raw, "Bonjour, ma box internet ne marche plus depuis ce matin.")
    sh("sox", raw, "-r", "8000", "-c", "1", "-e", "mu-law", os.path.join(work, "utterance.wav"), "pad", "0.5", "0")

    # sav's configuration: the repository's, on the namespace's ports, with
    # the fake providers and a registrar.
    with open(os.path.join(REPO, "sav.toml")) as f:
        config = f.read()
    config = (
        config.replace('listen = "127.0.0.1:5060"', f'listen = "127.0.0.1:{SIP}"')
        .replace("rtp_port_min = 20000", f"rtp_port_min = {RTP_MIN}")
        .replace("rtp_port_max = 20999", f"rtp_port_max = {RTP_MAX}")
        .replace('dir = "cache"', f'dir = "{REPO}/cache"')
        .replace('listen = "127.0.0.1:9464"', f'listen = "127.0.0.1:{METRICS}"')
        .replace("max_calls = 50", "max_calls = 200")
        .replace("drain_secs = 30", "drain_secs = 5")
        .replace('url = "sqlite://sav.db"', f'url = "sqlite://{work}/sav.db"')
        .replace("code_at_start = true", "code_at_start = false")
        # sipp calls from 127.0.0.1: the trunk.
        .replace("trusted = []", 'trusted = ["127.0.0.1"]')
    )
    register = (
        f'\n[sip.register]\nregistrar = "sip:127.0.0.1:{REGISTRAR}"\nusername = "1001"\n'
        'password_env = "SAV_CHAOS_PASSWORD"\nexpires = 10\nretry_min_secs = 1\nretry_max_secs = 4\n'
    )
    config = config.replace("\n[media]", register + "\n[media]", 1)
    base = f"http://127.0.0.1:{PROVIDERS}"
    at = config.find("\n[[problems]]")
    if at >= 0:
        config = config[: at + 1]
    config += (
        f'\n[llm]\nbase_url = "{base}/v1"\n\n[tts]\nbase_url = "{base}"\nvoice_id = "voice"\n'
        f'\n[stt]\nbase_url = "{base}/v1"\n'
    )
    config_path = os.path.join(work, "sav.toml")
    with open(config_path, "w") as f:
        f.write(config)

    faults = []

    def fault(text):
        stamp = time.monotonic() - t0
        faults.append(f"{stamp:6.1f} s  {text}")
        print(f"[chaos {stamp:6.1f} s] {text}", flush=True)

    sh("ip", "netns", "del", NS, check=False, stderr=subprocess.DEVNULL)
    sh("ip", "netns", "add", NS)
    try:
        sh(*ns("ip", "link", "set", "lo", "up"))
        sh(*ns("ip", "addr", "add", "127.0.0.2/8", "dev", "lo"), check=False)
        fakes = subprocess.Popen(
            ns(fakes_bin, str(PROVIDERS), "800", "300"),
            stdin=subprocess.PIPE,
            text=True,
            stderr=open(os.path.join(work, "fakes.log"), "w"),
        )
        relay = subprocess.Popen(
            ns("python3", os.path.join(REPO, "scripts", "rtp_relay.py"),
               "--listen", str(RELAY), "--sav", str(SIP), "--media", str(RELAY_MEDIA)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            stderr=open(os.path.join(work, "relay.log"), "w"),
        )
        registrar = Registrar()
        registrar.start()
        time.sleep(0.5)
        env = dict(os.environ, SAV_CHAOS_PASSWORD="x", RUST_LOG="info", NO_COLOR="1")
        sav = subprocess.Popen(
            ns(sav_bin, "serve", "--config", config_path),
            env=env,
            stderr=open(os.path.join(work, "sav.log"), "w"),
        )
        time.sleep(3)
        if sav.poll() is not None:
            sys.exit("sav did not start: see target/chaos/sav.log")
        rss0, fds0 = proc_stats(sav.pid)
        kinds0 = fd_kinds(sav.pid)

        sipp = subprocess.Popen(
            ns(
                "sipp", "-sf", os.path.join(REPO, "tests", "sipp", "uac_stream.xml"),
                "-s", "sav", f"127.0.0.1:{RELAY}", "-i", "127.0.0.1", "-p", str(SIPP),
                "-mp", str(SIPP_MEDIA), "-l", str(args.concurrent), "-r", "5",
                "-m", str(args.calls), "-d", str(args.seconds * 1000),
                "-nostdin", "-trace_stat", "-stf", os.path.join(work, "sipp.csv"),
                "-trace_err", "-error_file", os.path.join(work, "sipp-errors.log"),
            ),
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(work, "sipp.log"), "w"),
        )
        t0 = time.monotonic()

        def at(second):
            delay = t0 + second - time.monotonic()
            if delay > 0:
                time.sleep(delay)

        at(10)
        registrar.stop()
        fault("registrar killed")
        at(20)
        registrar.start()
        fault("registrar restarted")
        at(25)
        tell(fakes, "llm 500\n")
        fault("LLM answers 500")
        at(32)
        tell(fakes, "llm stall\n")
        fault("LLM stalls mid-stream")
        at(40)
        tell(fakes, "tts 500\nllm ok\n")
        fault("LLM back, TTS answers 500")
        at(47)
        tell(fakes, "tts ok\n")
        fault("TTS back")
        at(50)
        sav.send_signal(signal.SIGHUP)
        fault("SIGHUP (reload)")
        at(53)
        fault("OPTIONS flood: 10,000 from 127.0.0.2")
        options_flood(10_000)
        at(60)
        tell(relay, "stats\n")
        relay_before = json.loads(relay.stdout.readline())
        tell(relay, "impair 0.02 0.01 0.05 5 2\n")
        fault("RTP damaged both ways: 2 % lost, 1 % duplicated, 5 % reordered, 5 ± 2 ms")
        at(75)
        tell(relay, "clean\nstats\n")
        relay_after = json.loads(relay.stdout.readline())
        fault("RTP clean again")

        try:
            sipp.wait(timeout=600)
        except subprocess.TimeoutExpired:
            sipp.kill()
        # Settled: every call over (sav's own gauge), then a few seconds
        # for transactions to end.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            m = re.search(r"^sav_active_calls (\d+)", metrics_text(), re.M)
            if m and m.group(1) == "0":
                break
            time.sleep(1)
        time.sleep(args.settle)
        rss1, fds1 = proc_stats(sav.pid)
        kinds1 = fd_kinds(sav.pid)
        with open(os.path.join(work, "sockets-after.txt"), "w") as f:
            subprocess.run(ns("ss", "-tanp"), stdout=f, check=False)
        metrics = metrics_text()
        sav.send_signal(signal.SIGTERM)
        try:
            sav.wait(timeout=30)
        except subprocess.TimeoutExpired:
            sav.kill()
        registrar.stop()
        fakes.kill()
        relay.kill()
    finally:
        sh("ip", "netns", "del", NS, check=False)

    # What sipp saw.
    admitted = completed = failed = 0
    csv = os.path.join(work, "sipp.csv")
    if os.path.exists(csv):
        with open(csv) as f:
            rows = [line.rstrip("\n").split(";") for line in f if line.strip()]
        if len(rows) >= 2:
            header, last = rows[0], rows[-1]
            col = {name: i for i, name in enumerate(header)}

            def value(name):
                return int(last[col[name]]) if name in col and last[col[name]].isdigit() else 0

            admitted = value("TotalCallCreated")
            completed = value("SuccessfulCall(C)")
            failed = value("FailedCall(C)")
    # What sav recorded.
    db = sqlite3.connect(os.path.join(work, "sav.db"))
    records = db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    complete = db.execute(
        "SELECT COUNT(*) FROM calls WHERE ended_at IS NOT NULL AND outcome IS NOT NULL"
    ).fetchone()[0]
    # Bot-turn silences (sav's histogram).
    runs_total = runs_under = 0
    buckets = []
    for line in metrics.splitlines():
        m = re.match(r'sav_bot_silent_run_seconds_bucket\{le="([^"]+)"\} (\d+)', line)
        if m:
            buckets.append((float(m.group(1)), int(m.group(2))))
        if m and m.group(1) == "0.7":
            runs_under = int(m.group(2))
        m = re.match(r"sav_bot_silent_run_seconds_count (\d+)", line)
        if m:
            runs_total = int(m.group(1))
    # The worst run: the smallest bucket that holds them all.
    worst = next((le for le, count in sorted(buckets) if count == runs_total), None)
    worst_text = f"the worst at most {worst} s" if runs_total else "none at all" 
    # What the damage did to the calls, as sav's jitter buffers saw it.
    seen = {"reordered": 0, "duplicates": 0, "late": 0, "concealed": 0}
    with open(os.path.join(work, "sav.log")) as f:
        for line in f:
            if "media of the call" in line:
                for name in seen:
                    m = re.search(rf"\b{name}=(\d+)", line)
                    if m:
                        seen[name] += int(m.group(1))
    damage = {k: relay_after[k] - relay_before.get(k, 0) for k in relay_after if k != "pairs"}
    refused = sum(
        int(float(v))
        for v in re.findall(r'sav_sip_refused_total\{reason="[^"]+"\} ([0-9.e+]+)', metrics)
    )
    report = [
        f"chaos: {args.calls} calls, {args.concurrent} at a time, {args.seconds} s each, in netns {NS}",
        "faults injected:",
        *["  " + f for f in faults],
        f"calls: {admitted} created by sipp, {completed} completed, {failed} failed",
        f"records: {records} in the store, {complete} complete (ended, with an outcome)",
        f"bot-turn silences awaiting speech: {runs_total}, over 700 ms: {runs_total - runs_under}, "
        f"{worst_text} (sav_bot_silent_run_seconds buckets)",
        f"media damaged by the relay in its window: {damage['dropped']} dropped, {damage['duplicated']} duplicated, "
        f"{damage['reordered']} reordered, {damage['delayed']} delayed ({relay_after['pairs']} calls' media relayed); "
        f"toward sav: {damage['to_sav_dropped']} dropped, {damage['to_sav_duplicated']} duplicated, "
        f"{damage['to_sav_reordered']} reordered",
        f"  sav's jitter buffers over all calls: {seen['reordered']} reordered, {seen['duplicates']} duplicates, "
        f"{seen['late']} late, {seen['concealed']} concealed",
        f"SIP refused at the door: {refused}",
        f"sav RSS {rss0} KiB and {fds0} descriptors before the load, {rss1} KiB and {fds1} once every call and transaction was over",
        f"  descriptors before: {kinds0}; after: {kinds1}",
    ]
    text = "\n".join(report) + "\n"
    print(text)
    with open(os.path.join(REPO, "target", "chaos-report.txt"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
