#!/usr/bin/env python3
"""Load harness: sav's capacity and the timing of its outbound RTP, measured
on the wire, step by step.

    sudo python3 scripts/bench/load.py [--steps 100,500,1000] [--mode vad|keys|both]
                                       [--seconds 35] [--setup-rate] [--realtime-clock] [--console]
    sudo python3 scripts/bench/load.py --soak 600 [--soak-calls 300]

Not part of the test suite (root: everything runs in a network namespace
of its own, `savbench`; minutes per step). It builds sav and the fake
providers (release). Each step starts a fresh sav on a load copy of
sav.toml (warnings-only logs, room for the calls), then sipp callers at the
step's concurrency, each streaming an utterance (speech, then silence) for
--seconds; in "vad" mode the fake providers (LLM 800 ms, TTS 300 ms) make
every call listened to and answered, in "keys" mode there are none
(cached phrases and keys only). Per step it records:

  - failed calls (sipp's counts, and its error log's causes);
  - sav's CPU per call (from /proc/<pid>/stat over the window where every
    call is up) and RSS per call above idle (in the middle of it);
  - sav's outbound RTP on the wire (dumpcap on the namespace's loopback,
    headers only), per stream: inter-departure |Δ − 20 ms| p50/p99/max,
    schedule deviation |t_n − t_0 − n·20 ms| p99, max gap, sequence and
    timestamp breaks, first packet after the ACK; the worst stream of each
    figure is reported, and the median stream's;
  - the same figures for the callers' own streams (sipp's rtp_stream) in
    the same capture: a public tool's timing on the same box at the same
    moment;
  - packets the capture dropped, and the harness's own CPU (sipp, dumpcap).

A table is printed and target/bench/load-<mode>.csv and .json written.
--setup-rate also measures the call set-up rate: short calls at rising
rates until the first failure. --soak runs instead a soak: --soak-calls
calls at once with the VAD on, each replaced as it ends, for --soak
seconds; sav's RSS, descriptors and threads every 10 s, after the warm-up
against the end, idle before against idle after (target/bench/soak.json).
--heap-profile builds sav with dhat as its allocator (feature heap-profile:
every allocation slower, the timing figures of such a run mean nothing) and
after each step prints what was live at the heap's peak, by the sav
function that allocated it, per call (target/bench/heap-<mode>-<calls>.json
is dhat's own file, for its viewer).
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NS = "savbench"
SIP = 28060
METRICS = 28069
PROVIDERS = 28080
SIPP = 28061
SIPP_MEDIA = 30000
RTP_MIN, RTP_MAX = 40000, 49999
TICK = os.sysconf("SC_CLK_TCK")
# [media] realtime_clock in sav's load config (--realtime-clock).
REALTIME = False
# sav built with the heap-profile feature (--heap-profile).
HEAP_PROFILE = False
# The console on, open and refreshing during each step (--console).
CONSOLE = False
CONSOLE_PORT = 28070


def sh(*args, check=True, **kw):
    return subprocess.run(list(args), check=check, **kw)


def ns(*args):
    return ["ip", "netns", "exec", NS, *args]


def proc_cpu(pid):
    """User + system CPU seconds of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def children_cpu(pid):
    """CPU seconds of a process and its reaped children."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / TICK


def status_field(pid, key):
    """A number of /proc/<pid>/status (VmRSS in KiB, Threads...)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def rss_kib(pid):
    return status_field(pid, "VmRSS")


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def pcap_packets(path):
    """(time, ip payload) of each packet of a pcap file (Ethernet or raw)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    offset = 24
    scale = 1e-9 if nano else 1e-6
    while offset + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack(endian + "IIII", data[offset:offset + 16])
        offset += 16
        frame = data[offset:offset + caplen]
        offset += caplen
        if linktype == 1:
            if len(frame) < 14 or frame[12:14] != b"\x08\x00":
                continue
            frame = frame[14:]
        elif linktype == 113:  # Linux cooked
            frame = frame[16:]
        yield sec + frac * scale, frame


def udp_of(frame):
    """(src port, dst port, payload) of an IPv4 UDP packet."""
    if len(frame) < 28 or frame[0] >> 4 != 4 or frame[9] != 17:
        return None
    ihl = (frame[0] & 0x0F) * 4
    sport, dport = struct.unpack(">HH", frame[ihl:ihl + 4])
    return sport, dport, frame[ihl + 8:]


def percentile(values, q):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))]


def stream_figures(packets):
    """The timing of one RTP stream: [(time, seq, timestamp)] in arrival order."""
    deltas, deviations = [], []
    seq_breaks = ts_breaks = 0
    t0, s0 = packets[0][0], packets[0][1]
    unwrapped = 0
    prev = packets[0]
    for t, seq, ts in packets[1:]:
        step = (seq - prev[1]) & 0xFFFF
        if step != 1:
            seq_breaks += 1
        elif (ts - prev[2]) & 0xFFFFFFFF != 160:
            ts_breaks += 1
        unwrapped += step
        deltas.append(abs((t - prev[0]) * 1000 - 20 * step))
        deviations.append(abs((t - t0) * 1000 - 20 * unwrapped))
        prev = (t, seq, ts)
    gaps = [(b[0] - a[0]) * 1000 for a, b in zip(packets, packets[1:])]
    return {
        "packets": len(packets),
        "p50": percentile(deltas, 0.5),
        "p99": percentile(deltas, 0.99),
        "max": max(deltas) if deltas else 0.0,
        "schedule_p99": percentile(deviations, 0.99),
        "max_gap": max(gaps) if gaps else 0.0,
        "seq_breaks": seq_breaks,
        "ts_breaks": ts_breaks,
        "first": packets[0][0],
    }


def analyse(rtp_pcap, sip_pcap):
    """Figures of sav's streams and of the callers', and sav's first packet
    after each ACK."""
    streams = {}
    for t, frame in pcap_packets(rtp_pcap):
        udp = udp_of(frame)
        if udp is None:
            continue
        sport, dport, payload = udp
        if len(payload) < 12 or payload[0] >> 6 != 2 or 72 <= (payload[1] & 0x7F) <= 76:
            continue  # not RTP (RTCP's packet types 200-204)
        if payload[1] & 0x7F != 0:
            continue  # telephone-event and the like: not the audio clock
        seq, ts = struct.unpack(">HI", payload[2:8])
        streams.setdefault((sport, dport), []).append((t, seq, ts))
    # sav's port per call (its 200's SDP), and the ACK's time.
    port_of_call, ack_at = {}, {}
    for t, frame in pcap_packets(sip_pcap):
        udp = udp_of(frame)
        if udp is None:
            continue
        text = udp[2].decode("utf-8", "replace")
        call = re.search(r"(?im)^(?:call-id|i)\s*:\s*(\S+)", text)
        if not call:
            continue
        call = call.group(1)
        if text.startswith("SIP/2.0 200") and "INVITE" in (re.search(r"(?im)^cseq:.*$", text) or [""])[0]:
            m = re.search(r"(?m)^m=audio (\d+) ", text)
            if m:
                port_of_call[call] = int(m.group(1))
        elif text.startswith("ACK ") and call not in ack_at:
            ack_at[call] = t
    sav, callers = [], []
    first_by_port = {}
    for (sport, dport), packets in streams.items():
        if len(packets) < 50:
            continue
        figures = stream_figures(packets)
        if RTP_MIN <= sport <= RTP_MAX:
            sav.append(figures)
            first_by_port[sport] = min(first_by_port.get(sport, 1e18), figures["first"])
        else:
            callers.append(figures)
    first_after_ack = [
        (first_by_port[port] - ack_at[call]) * 1000
        for call, port in port_of_call.items()
        if call in ack_at and port in first_by_port
    ]
    return sav, callers, first_after_ack


def summary(streams):
    """The worst stream's figures, and the median stream's."""
    if not streams:
        return {}
    out = {"streams": len(streams)}
    for key in ("p50", "p99", "max", "schedule_p99", "max_gap"):
        values = [s[key] for s in streams]
        out[f"worst_{key}"] = max(values)
        out[f"median_{key}"] = statistics.median(values)
    out["seq_breaks"] = sum(s["seq_breaks"] for s in streams)
    out["ts_breaks"] = sum(s["ts_breaks"] for s in streams)
    return out


def write_config(work, mode, max_calls):
    with open(os.path.join(REPO, "sav.toml")) as f:
        config = f.read()
    config = (
        config.replace('listen = "127.0.0.1:5060"', f'listen = "127.0.0.1:{SIP}"')
        .replace("rtp_port_min = 20000", f"rtp_port_min = {RTP_MIN}")
        .replace("rtp_port_max = 20999", f"rtp_port_max = {RTP_MAX}")
        .replace('dir = "cache"', f'dir = "{REPO}/cache"')
        .replace('listen = "127.0.0.1:9464"', f'listen = "127.0.0.1:{METRICS}"')
        .replace("max_calls = 50", f"max_calls = {max_calls}")
        .replace("drain_secs = 30", "drain_secs = 2")
        .replace('url = "sqlite://sav.db"', f'url = "sqlite://{work}/sav.db"')
        .replace("code_at_start = true", "code_at_start = false")
        # The load generator is the trunk: trusted, no admission limits.
        .replace("trusted = []", 'trusted = ["127.0.0.1"]')
        .replace("realtime_clock = false", f"realtime_clock = {'true' if REALTIME else 'false'}")
    )
    if CONSOLE:
        # Loopback, no users: the refresher is an anonymous viewer.
        config = config.replace("\n[[problems]]", f'\n[console]\nlisten = "127.0.0.1:{CONSOLE_PORT}"\n\n[[problems]]', 1)
    if mode == "vad":
        base = f"http://127.0.0.1:{PROVIDERS}"
        at = config.find("\n[[problems]]")
        if at >= 0:
            config = config[: at + 1]
        config += (
            f'\n[llm]\nbase_url = "{base}/v1"\n\n[tts]\nbase_url = "{base}"\nvoice_id = "voice"\n'
            f'\n[stt]\nbase_url = "{base}/v1"\n'
        )
    path = os.path.join(work, f"sav-{mode}.toml")
    with open(path, "w") as f:
        f.write(config)
    return path


def console_refresher(seconds, out, streams=4):
    """The console open in a few browsers during the load: `streams` live
    views held open (their event streams read), and once a second the
    pages and the API a person refreshes (live, calls, a call with its
    drawing, today, phrases). Writes the counts and latencies to `out`."""
    import threading
    import urllib.request

    base = f"http://127.0.0.1:{CONSOLE_PORT}"
    stop = time.monotonic() + seconds
    counts = {"requests": 0, "errors": 0, "events": 0, "latencies_ms": []}
    lock = threading.Lock()

    def stream():
        while time.monotonic() < stop:
            try:
                with urllib.request.urlopen(base + "/api/live/events", timeout=5) as r:
                    for line in r:
                        if line.startswith(b"event: calls"):
                            with lock:
                                counts["events"] += 1
                        if time.monotonic() >= stop:
                            return
            except Exception:
                with lock:
                    counts["errors"] += 1
                time.sleep(0.5)

    def get(path):
        t = time.monotonic()
        try:
            with urllib.request.urlopen(base + path, timeout=10) as r:
                body = r.read()
            with lock:
                counts["requests"] += 1
                counts["latencies_ms"].append((time.monotonic() - t) * 1000)
            return body
        except Exception:
            with lock:
                counts["errors"] += 1
            return b""

    threads = [threading.Thread(target=stream, daemon=True) for _ in range(streams)]
    for t in threads:
        t.start()
    while time.monotonic() < stop:
        tick = time.monotonic()
        for path in ["/live", "/api/live", "/calls", "/today", "/phrases"]:
            get(path)
        listed = get("/api/calls?limit=5")
        try:
            calls = json.loads(listed or b"{}").get("calls", [])
            if calls:
                get("/calls/" + calls[0]["id"])
        except ValueError:
            pass
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    lat = sorted(counts.pop("latencies_ms"))
    counts["p50_ms"] = lat[len(lat) // 2] if lat else None
    counts["p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None
    counts["max_ms"] = lat[-1] if lat else None
    with open(out, "w") as f:
        json.dump(counts, f)


def sipp_counts(csv):
    if not os.path.exists(csv):
        return 0, 0, 0
    with open(csv) as f:
        rows = [line.rstrip("\n").split(";") for line in f if line.strip()]
    if len(rows) < 2:
        return 0, 0, 0
    col = {name: i for i, name in enumerate(rows[0])}

    def value(name):
        v = rows[-1][col[name]] if name in col else "0"
        return int(v) if v.isdigit() else 0

    return value("TotalCallCreated"), value("SuccessfulCall(C)"), value("FailedCall(C)")


def failure_causes(path):
    causes = {}
    if os.path.exists(path):
        with open(path, errors="replace") as f:
            for line in f:
                m = re.search(r"(Aborting call[^,.]*|Call-Id[^:]*: .*?unexpected[^.]*|[Uu]nexpected \w+)", line)
                if m:
                    key = re.sub(r"\d+", "N", m.group(1))[:80]
                    causes[key] = causes.get(key, 0) + 1
    return causes


def start_sav(bin_path, config, work, step):
    env = dict(os.environ, RUST_LOG="warn", NO_COLOR="1")
    sav = subprocess.Popen(
        ns(bin_path, "serve", "--config", config),
        env=env,
        stderr=open(os.path.join(work, f"sav-{step}.log"), "w"),
    )
    time.sleep(3)
    if sav.poll() is not None:
        sys.exit(f"sav did not start: see {work}/sav-{step}.log")
    return sav


def start_callers(work, tag, at_once, rate, total, seconds, csv, errors, stat_every):
    """sipp callers streaming the utterance: `at_once` calls up at a time,
    `total` in all, placed at `rate` a second, each `seconds` long."""
    return subprocess.Popen(
        ns(
            "sipp", "-sf", os.path.join(REPO, "tests", "sipp", "uac_stream.xml"),
            "-s", "sav", f"127.0.0.1:{SIP}", "-i", "127.0.0.1", "-p", str(SIPP),
            "-mp", str(SIPP_MEDIA), "-l", str(at_once), "-r", str(rate),
            "-m", str(total), "-d", str(seconds * 1000), "-max_socket", "20000",
            "-nostdin", "-trace_stat", "-stf", csv, "-fd", str(stat_every),
            "-trace_err", "-error_file", errors,
        ),
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(work, f"sipp-{tag}.log"), "w"),
    )


def run_step(args, work, mode, calls, bins):
    sav_bin, fakes_bin = bins
    config = write_config(work, mode, calls + 50)
    fakes = None
    if mode == "vad":
        fakes = subprocess.Popen(
            ns(fakes_bin, str(PROVIDERS), "800", "300"),
            stdin=subprocess.PIPE,
            stderr=open(os.path.join(work, "fakes.log"), "w"),
        )
    tag = f"{mode}-{calls}"
    sav = start_sav(sav_bin, config, work, tag)
    idle_rss = rss_kib(sav.pid)
    idle_fds = fds(sav.pid)
    rtp_pcap = os.path.join(work, f"rtp-{tag}.pcap")
    sip_pcap = os.path.join(work, f"sip-{tag}.pcap")
    captures = [
        subprocess.Popen(
            ns("dumpcap", "-q", "-P", "-i", "lo", "-s", "64", "-B", "256", "-w", rtp_pcap,
               "-f", f"udp and not port {SIP}"),
            stderr=subprocess.PIPE, text=True,
        ),
        subprocess.Popen(
            ns("dumpcap", "-q", "-P", "-i", "lo", "-B", "64", "-w", sip_pcap, "-f", f"udp port {SIP}"),
            stderr=subprocess.PIPE, text=True,
        ),
    ]
    time.sleep(2)
    rate = max(10, min(100, calls // 10))
    csv = os.path.join(work, f"sipp-{tag}.csv")
    errors = os.path.join(work, f"sipp-{tag}-errors.log")
    refresher = None
    refreshed = os.path.join(work, f"console-{tag}.json")
    if CONSOLE:
        refresher = subprocess.Popen(
            ns(sys.executable, os.path.abspath(__file__), "--console-refresher",
               str(args.seconds), refreshed),
        )
    start = time.monotonic()
    sipp = start_callers(work, tag, calls, rate, calls, args.seconds, csv, errors, 1)
    # Every call is up from the end of the ramp until the first one ends.
    ramp = calls / rate + 1.5
    window_start = start + ramp
    window_end = start + args.seconds - 1
    while time.monotonic() < window_start:
        time.sleep(0.05)
    cpu0, t0 = proc_cpu(sav.pid), time.monotonic()
    harness0 = sum(children_cpu(p.pid) for p in [sipp, *captures])
    time.sleep(max(1.0, (window_end - time.monotonic()) / 2))
    busy_rss = rss_kib(sav.pid)
    while time.monotonic() < window_end:
        time.sleep(0.05)
    cpu1, t1 = proc_cpu(sav.pid), time.monotonic()
    harness1 = sum(children_cpu(p.pid) for p in [sipp, *captures])
    try:
        sipp.wait(timeout=args.seconds + 120)
    except subprocess.TimeoutExpired:
        sipp.kill()
    time.sleep(1)
    console = None
    if refresher:
        try:
            refresher.wait(timeout=60)
            with open(refreshed) as f:
                console = json.load(f)
        except (subprocess.TimeoutExpired, OSError, ValueError):
            refresher.kill()
    drops = 0
    for capture in captures:
        capture.send_signal(signal.SIGINT)
        try:
            _, err = capture.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            capture.kill()
            err = ""
        # "Packets received/dropped on interface 'lo': 123/4 (pcap:4/...)"
        m = re.search(r"received/dropped on interface[^:]*:\s*\d+/(\d+)", err or "")
        if m:
            drops += int(m.group(1))
    sav.send_signal(signal.SIGTERM)
    try:
        sav.wait(timeout=300 if HEAP_PROFILE else 30)
    except subprocess.TimeoutExpired:
        sav.kill()
    if fakes:
        fakes.kill()
    if HEAP_PROFILE:
        heap_report(work, tag, calls)
    created, completed, failed = sipp_counts(csv)
    sav_streams, caller_streams, first_after_ack = analyse(rtp_pcap, sip_pcap)
    window = t1 - t0
    row = {
        "mode": mode,
        "calls": calls,
        "created": created,
        "completed": completed,
        "failed": failed,
        "failure_causes": failure_causes(errors),
        "cpu_per_call_pct": 100 * (cpu1 - cpu0) / window / calls if window > 0 else 0,
        "sav_cpu_pct": 100 * (cpu1 - cpu0) / window if window > 0 else 0,
        "rss_per_call_kib": (busy_rss - idle_rss) / calls,
        "idle_rss_kib": idle_rss,
        "idle_fds": idle_fds,
        "harness_cpu_pct": 100 * (harness1 - harness0) / window if window > 0 else 0,
        "capture_drops": drops,
        "window_s": window,
        "sav": summary(sav_streams),
        "callers": summary(caller_streams),
        "first_after_ack_worst_ms": max(first_after_ack) if first_after_ack else None,
        "first_after_ack_median_ms": statistics.median(first_after_ack) if first_after_ack else None,
        "console": console,
    }
    if not args.keep_captures:
        for path in (rtp_pcap, sip_pcap):
            os.remove(path)
    return row


def setup_rate(args, work, bins):
    """Short calls at rising rates: the highest with no failure."""
    sav_bin, _ = bins
    config = write_config(work, "keys", 2000)
    results = []
    for rate in (25, 50, 100, 200, 400, 800, 1600):
        sav = start_sav(sav_bin, config, work, f"setup-{rate}")
        csv = os.path.join(work, f"sipp-setup-{rate}.csv")
        sh(*ns(
            "sipp", "-sf", os.path.join(REPO, "tests", "sipp", "uac_stream.xml"),
            "-s", "sav", f"127.0.0.1:{SIP}", "-i", "127.0.0.1", "-p", str(SIPP),
            "-mp", str(SIPP_MEDIA), "-r", str(rate), "-m", str(rate * 5), "-d", "2000",
            "-max_socket", "20000", "-nostdin", "-trace_stat", "-stf", csv, "-fd", "1",
            "-timeout", "60s",
        ), cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        sav.send_signal(signal.SIGTERM)
        sav.wait(timeout=30)
        created, completed, failed = sipp_counts(csv)
        results.append({"rate": rate, "created": created, "completed": completed, "failed": failed})
        print(f"setup rate {rate}/s: {created} created, {completed} completed, {failed} failed", flush=True)
        if failed or completed < created:
            break
    return results


def heap_report(work, tag, calls):
    """What was live at the heap's peak (dhat's t-gmax), grouped by the
    innermost sav function on each allocation's stack, per call."""
    src = "dhat-heap.json"  # in sav's working directory, this one
    if not os.path.exists(src):
        print("no dhat-heap.json (did sav exit cleanly?)", flush=True)
        return
    dst = os.path.join(work, f"heap-{tag}.json")
    os.replace(src, dst)
    with open(dst) as f:
        profile = json.load(f)
    frames = profile["ftbl"]
    by_site = {}
    total = 0
    for pp in profile["pps"]:
        live = pp.get("gb", 0)
        if not live:
            continue
        total += live
        names = [frames[i] for i in pp["fs"]]
        ours = [n for n in names if " sav::" in n or "sav::" in n.split(": ", 1)[-1][:6]]
        site = ours[0] if ours else (names[0] if names else "?")
        # "0x1234: sav::media::vad::Vad::new (src/media/vad.rs:123:9)" -> the function and place
        site = site.split(": ", 1)[-1]
        outer = next((n.split(": ", 1)[-1] for n in names
                      if "sav::call::" in n or "sav::app::" in n), "")
        key = (site, outer.split(" (")[0])
        by_site[key] = by_site.get(key, 0) + live
    print(f"heap at its peak: {total / 1024:.0f} KiB, {total / 1024 / calls:.1f} KiB per call "
          f"({calls} calls)", flush=True)
    for (site, outer), live in sorted(by_site.items(), key=lambda kv: -kv[1])[:30]:
        print(f"{live / 1024 / calls:8.1f} KiB/call  {site}   <- {outer}", flush=True)


def threads(pid):
    return status_field(pid, "Threads")


def soak(args, work, bins):
    """--soak-calls calls at once (VAD on), each replaced as it ends, for
    --soak seconds: sav's RSS, descriptors and threads sampled every 10 s;
    the figures after the warm-up (the first calls replaced) against those
    at the end, and idle before against idle after."""
    sav_bin, fakes_bin = bins
    calls = args.soak_calls
    config = write_config(work, "vad", calls + 50)
    fakes = subprocess.Popen(
        ns(fakes_bin, str(PROVIDERS), "800", "300"),
        stdin=subprocess.PIPE,
        stderr=open(os.path.join(work, "fakes-soak.log"), "w"),
    )
    sav = start_sav(sav_bin, config, work, "soak")
    idle = {"rss_kib": rss_kib(sav.pid), "fds": fds(sav.pid), "threads": threads(sav.pid)}
    rate = max(10, min(100, calls // 10))
    total = calls * max(1, int(args.soak / (args.seconds + 1)))
    csv = os.path.join(work, "sipp-soak.csv")
    errors = os.path.join(work, "sipp-soak-errors.log")
    start = time.monotonic()
    sipp = start_callers(work, "soak", calls, rate, total, args.seconds, csv, errors, 5)
    samples = []
    while sipp.poll() is None and time.monotonic() - start < args.soak + 600:
        time.sleep(10)
        samples.append({
            "t": round(time.monotonic() - start),
            "rss_kib": rss_kib(sav.pid),
            "fds": fds(sav.pid),
            "threads": threads(sav.pid),
            "cpu_s": proc_cpu(sav.pid),
        })
        print(f"soak {samples[-1]}", flush=True)
    if sipp.poll() is None:
        sipp.kill()
    # Every call over, the providers' idle connections closed (90 s).
    time.sleep(100)
    after = {"rss_kib": rss_kib(sav.pid), "fds": fds(sav.pid), "threads": threads(sav.pid)}
    sav.send_signal(signal.SIGTERM)
    try:
        sav.wait(timeout=30)
    except subprocess.TimeoutExpired:
        sav.kill()
    fakes.kill()
    created, completed, failed = sipp_counts(csv)
    # Warm-up: until the first calls have been replaced (two call lengths).
    warm = [s for s in samples if s["t"] >= 2 * args.seconds]
    loaded = [s for s in warm if s["t"] <= args.soak]
    result = {
        "calls_at_once": calls,
        "seconds": args.soak,
        "created": created,
        "completed": completed,
        "failed": failed,
        "failure_causes": failure_causes(errors),
        "idle_before": idle,
        "idle_after": after,
        "loaded_first": loaded[0] if loaded else None,
        "loaded_last": loaded[-1] if loaded else None,
        "loaded_rss_min_kib": min(s["rss_kib"] for s in loaded) if loaded else None,
        "loaded_rss_max_kib": max(s["rss_kib"] for s in loaded) if loaded else None,
        "samples": samples,
    }
    with open(os.path.join(work, "soak.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}), flush=True)
    return result


def fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", default="100,500,1000")
    parser.add_argument("--mode", default="both", choices=["vad", "keys", "both"])
    parser.add_argument("--seconds", type=int, default=35, help="each call's length")
    parser.add_argument("--setup-rate", action="store_true")
    parser.add_argument("--keep-captures", action="store_true")
    parser.add_argument("--soak", type=int, default=0,
                        help="seconds of soak (calls replaced as they end) instead of steps")
    parser.add_argument("--soak-calls", type=int, default=300)
    parser.add_argument("--realtime-clock", action="store_true",
                        help="[media] realtime_clock = true (SCHED_FIFO media thread)")
    parser.add_argument("--console", action="store_true",
                        help="the console on, 4 live views open and its pages refreshed every second")
    parser.add_argument("--console-refresher", nargs=2, metavar=("SECONDS", "OUT"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--heap-profile", action="store_true",
                        help="sav with dhat as its allocator: what is live at the peak, per call")
    args = parser.parse_args()
    global REALTIME, HEAP_PROFILE, CONSOLE
    if args.console_refresher:
        console_refresher(float(args.console_refresher[0]), args.console_refresher[1])
        return
    REALTIME = args.realtime_clock
    HEAP_PROFILE = args.heap_profile
    CONSOLE = args.console
    if os.geteuid() != 0:
        sys.exit("load.py needs root (a network namespace)")
    for tool in ["sipp", "espeak-ng", "sox", "dumpcap", "ip"]:
        if shutil.which(tool) is None:
            sys.exit(f"load.py needs {tool}")
    work = os.path.join(REPO, "target", "bench")
    os.makedirs(work, exist_ok=True)
    features = ["--features", "heap-profile"] if HEAP_PROFILE else []
    sh("cargo", "build", "--release", "--bin", "sav", "--example", "fake_providers", *features,
       cwd=REPO)
    bins = (
        os.path.join(REPO, "target", "release", "sav"),
        os.path.join(REPO, "target", "release", "examples", "fake_providers"),
    )
    # The caller's voice: 3 s of speech, then silence.
    raw = os.path.join(work, "raw.wav")
    sh("espeak-ng", "-v", "fr", "-w", raw, "Bonjour, ma box internet ne marche plus depuis ce matin.")
    sh("sox", raw, "-r", "8000", "-c", "1", "-e", "mu-law", os.path.join(work, "utterance.wav"),
       "pad", "0.5", str(args.seconds))
    sh("ip", "netns", "del", NS, check=False, stderr=subprocess.DEVNULL)
    sh("ip", "netns", "add", NS)
    rows = []
    modes = ["vad", "keys"] if args.mode == "both" else [args.mode]
    try:
        sh(*ns("ip", "link", "set", "lo", "up"))
        if args.soak:
            soak(args, work, bins)
            return
        for mode in modes:
            for calls in (int(s) for s in args.steps.split(",")):
                print(f"== {mode}, {calls} calls", flush=True)
                row = run_step(args, work, mode, calls, bins)
                rows.append(row)
                print(json.dumps(row), flush=True)
        setup = setup_rate(args, work, bins) if args.setup_rate else None
    finally:
        sh("ip", "netns", "del", NS, check=False)

    header = ("mode calls failed cpu%/call rss/call(KiB) sav_p99 sav_max sav_sched_p99 sav_gap "
              "breaks first_ack(ms) sipp_p99 sipp_gap drops harness%")
    lines = [header]
    for r in rows:
        s, c = r["sav"], r["callers"]
        lines.append(" ".join([
            r["mode"], str(r["calls"]), str(r["failed"]), fmt(r["cpu_per_call_pct"], 3),
            fmt(r["rss_per_call_kib"], 0), fmt(s.get("worst_p99")), fmt(s.get("worst_max")),
            fmt(s.get("worst_schedule_p99")), fmt(s.get("worst_max_gap"), 1),
            str(s.get("seq_breaks", 0) + s.get("ts_breaks", 0)), fmt(r["first_after_ack_worst_ms"]),
            fmt(c.get("worst_p99")), fmt(c.get("worst_max_gap"), 1), str(r["capture_drops"]),
            fmt(r["harness_cpu_pct"], 0),
        ]))
    text = "\n".join(lines) + "\n"
    print(text)
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        with open(os.path.join(work, f"load-{mode}.json"), "w") as f:
            json.dump({"rows": mine, "setup_rate": setup}, f, indent=2)
        with open(os.path.join(work, f"load-{mode}.csv"), "w") as f:
            f.write(header.replace(" ", ",") + "\n")
            for line in lines[1:]:
                if line.startswith(mode + " "):
                    f.write(line.replace(" ", ",") + "\n")
    with open(os.path.join(work, "load-table.txt"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
