#!/usr/bin/env python3
"""A UDP relay between a SIP caller (sipp) and sav that can damage the
calls' RTP: for machines whose kernel has no `tc netem` (scripts/chaos.py
runs it in its network namespace).

    python3 scripts/rtp_relay.py --listen 27070 --sav 27060 --media 40000

SIP: a request from the caller to --listen (all of them, as sipp sends
everything to its -s address) goes to sav with our Via on top, so its
responses come back here; a response from sav loses that Via and, when it
carries SDP, has its audio port replaced by a pair of ours. Requests sav
sends (its BYE) go straight to the caller's Contact. RTP and RTCP: what
reaches one of our pairs from the caller goes to sav's port from that same
pair (sav latches to it), what comes from sav goes back to the caller's
last source. So both directions of every call's RTP pass here (and its
RTCP, where the caller sends some: sipp does not).

Faults, as lines on stdin: `impair LOSS DUP REORDER DELAY_MS JITTER_MS`
(probabilities 0..1 per packet, both directions; a reordered packet is
held until the next one of its flow, same direction, has left), `clean`,
and `stats` (one line of JSON on stdout: packets relayed, and dropped,
duplicated, reordered, delayed in all and toward sav). Bounded: at most 2,000 media pairs, idle ones (30 s)
closed; packets held for reordering or delay are at most 4,096.
"""

import argparse
import heapq
import json
import os
import random
import re
import selectors
import socket
import sys
import time

MAX_PAIRS = 2000
IDLE_S = 30.0
MAX_HELD = 4096


class Relay:
    def __init__(self, listen, sav, media):
        self.sav = ("127.0.0.1", sav)
        self.listen = listen
        self.sel = selectors.DefaultSelector()
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", listen))
        self.sip.setblocking(False)
        self.sel.register(self.sip, selectors.EVENT_READ, ("sip", None))
        self.sel.register(sys.stdin, selectors.EVENT_READ, ("control", None))
        self.next_port = media
        self.first_port = media
        # (call-id, sav's port) -> our RTP port; our port -> its pair state.
        self.pairs = {}
        self.flows = {}
        # Forwarding branch -> the caller's address for the responses.
        self.callers = {}
        self.loss = self.dup = self.reorder = 0.0
        self.delay = self.jitter = 0.0
        self.held = []  # heap of (due, n, socket, data, to)
        self.holding = {}  # our port -> a packet waiting for the next one
        self.n = 0
        self.control_buf = b""
        self.stats = dict(relayed=0, dropped=0, duplicated=0, reordered=0, delayed=0, pairs=0,
                          to_sav_dropped=0, to_sav_duplicated=0, to_sav_reordered=0)

    # SIP ----------------------------------------------------------------

    def on_sip(self, data, source):
        text = data.decode("utf-8", "replace")
        if text.startswith("SIP/2.0 "):
            self.on_response(text)
        elif source != self.sav:
            self.on_request(text, source)

    def on_request(self, text, source):
        head, _, body = text.partition("\r\n\r\n")
        m = re.search(r"(?im)^via:.*branch=([^;\s,]+)", head)
        if not m:
            return
        branch = "z9hG4bKrelay" + m.group(1)
        self.callers[branch] = source
        if len(self.callers) > 20000:
            self.callers.pop(next(iter(self.callers)))
        first, _, rest = head.partition("\r\n")
        via = f"Via: SIP/2.0/UDP 127.0.0.1:{self.listen};branch={branch};rport"
        out = f"{first}\r\n{via}\r\n{rest}\r\n\r\n{body}"
        self.sip.sendto(out.encode(), self.sav)

    def on_response(self, text):
        head, _, body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        at = next((i for i, l in enumerate(lines) if re.match(r"(?i)via\s*:", l)), None)
        if at is None:
            return
        m = re.search(r"branch=([^;\s,]+)", lines[at])
        caller = self.callers.get(m.group(1)) if m else None
        if caller is None:
            return
        del lines[at]
        call_id = next((l.split(":", 1)[1].strip() for l in lines if re.match(r"(?i)(call-id|i)\s*:", l)), "")
        audio = re.search(r"(?m)^m=audio (\d+) ", body)
        # (No pair left: the answer goes on unchanged, its media direct.)
        port = self.pair_for(call_id, int(audio.group(1))) if audio else None
        if port is not None:
            body = body[: audio.start(1)] + str(port) + body[audio.end(1):]
            lines = [
                f"Content-Length: {len(body.encode())}" if re.match(r"(?i)(content-length|l)\s*:", l) else l
                for l in lines
            ]
        self.sip.sendto(("\r\n".join(lines) + "\r\n\r\n" + body).encode(), caller)

    def pair_for(self, call_id, sav_port):
        key = (call_id, sav_port)
        if key in self.pairs:
            return self.pairs[key]
        if len(self.flows) >= 2 * MAX_PAIRS:
            return None
        for _ in range(MAX_PAIRS):
            port = self.next_port
            self.next_port += 2
            if self.next_port >= self.first_port + 4 * MAX_PAIRS:
                self.next_port = self.first_port
            if port in self.flows:
                continue
            try:
                sockets = []
                for offset in (0, 1):
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    s.bind(("127.0.0.1", port + offset))
                    s.setblocking(False)
                    sockets.append(s)
            except OSError:
                for s in sockets:
                    s.close()
                continue
            for offset, s in enumerate(sockets):
                flow = dict(sock=s, sav=("127.0.0.1", sav_port + offset), caller=None, seen=time.monotonic(), key=key)
                self.flows[port + offset] = flow
                self.sel.register(s, selectors.EVENT_READ, ("media", port + offset))
            self.pairs[key] = port
            self.stats["pairs"] += 1
            return port
        return None

    # Media --------------------------------------------------------------

    def on_media(self, port, data, source):
        flow = self.flows.get(port)
        if flow is None:
            return
        flow["seen"] = time.monotonic()
        if source == flow["sav"]:
            to = flow["caller"]
            if to is None:
                return
        else:
            flow["caller"] = source
            to = flow["sav"]
        self.forward(port, flow["sock"], data, to, to == flow["sav"])

    def count(self, what, to_sav):
        self.stats[what] += 1
        if to_sav:
            self.stats["to_sav_" + what] += 1

    def forward(self, port, sock, data, to, to_sav):
        if random.random() < self.loss:
            self.count("dropped", to_sav)
            return
        flow = (port, to)
        waiting = self.holding.pop(flow, None)
        if waiting is None and random.random() < self.reorder and len(self.holding) < MAX_HELD:
            # Held back: it leaves right after the next packet of its flow.
            self.holding[flow] = (data, to)
            self.count("reordered", to_sav)
            return
        self.send(sock, data, to)
        if random.random() < self.dup:
            self.count("duplicated", to_sav)
            self.send(sock, data, to)
        if waiting is not None:
            self.send(sock, *waiting)

    def send(self, sock, data, to):
        wait = self.delay + random.uniform(-self.jitter, self.jitter) if self.delay else 0.0
        if wait > 0 and len(self.held) < MAX_HELD:
            self.n += 1
            heapq.heappush(self.held, (time.monotonic() + wait / 1000.0, self.n, sock, data, to))
            self.stats["delayed"] += 1
            return
        try:
            sock.sendto(data, to)
            self.stats["relayed"] += 1
        except OSError:
            pass

    def release_due(self):
        now = time.monotonic()
        while self.held and self.held[0][0] <= now:
            _, _, sock, data, to = heapq.heappop(self.held)
            try:
                sock.sendto(data, to)
                self.stats["relayed"] += 1
            except OSError:
                pass

    def close_idle(self):
        now = time.monotonic()
        for port, flow in list(self.flows.items()):
            if now - flow["seen"] > IDLE_S and port % 2 == self.first_port % 2:
                for p in (port, port + 1):
                    f = self.flows.pop(p, None)
                    if f:
                        self.sel.unregister(f["sock"])
                        f["sock"].close()
                    for flow_key in [k for k in self.holding if k[0] == p]:
                        del self.holding[flow_key]
                self.pairs.pop(flow["key"], None)

    # Control ------------------------------------------------------------

    def on_control(self):
        # Whole lines from what is there (several may have come at once).
        chunk = os.read(sys.stdin.fileno(), 4096)
        if not chunk:
            sys.exit(0)
        self.control_buf += chunk
        while b"\n" in self.control_buf:
            line, self.control_buf = self.control_buf.split(b"\n", 1)
            self.command(line.decode().split())

    def command(self, words):
        if not words:
            return
        if words[0] == "impair" and len(words) == 6:
            self.loss, self.dup, self.reorder = (float(w) for w in words[1:4])
            self.delay, self.jitter = float(words[4]), float(words[5])
        elif words[0] == "clean":
            self.loss = self.dup = self.reorder = self.delay = self.jitter = 0.0
        elif words[0] == "stats":
            print(json.dumps(self.stats), flush=True)

    def run(self):
        last_sweep = time.monotonic()
        while True:
            timeout = 1.0
            if self.held:
                timeout = max(0.0, min(timeout, self.held[0][0] - time.monotonic()))
            for key, _ in self.sel.select(timeout):
                kind, port = key.data
                if kind == "control":
                    self.on_control()
                    continue
                for _ in range(64):
                    try:
                        data, source = key.fileobj.recvfrom(65535)
                    except (BlockingIOError, OSError):
                        break
                    if kind == "sip":
                        self.on_sip(data, source)
                    else:
                        self.on_media(port, data, source)
            self.release_due()
            if time.monotonic() - last_sweep > 5:
                self.close_idle()
                last_sweep = time.monotonic()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", type=int, required=True, help="our SIP port (the caller's target)")
    parser.add_argument("--sav", type=int, required=True, help="sav's SIP port")
    parser.add_argument("--media", type=int, required=True, help="our first media port")
    args = parser.parse_args()
    Relay(args.listen, args.sav, args.media).run()


if __name__ == "__main__":
    main()
