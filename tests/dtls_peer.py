#!/usr/bin/env python3
"""A DTLS-SRTP party with ICE for tests/relay_dtls.rs, built from aiortc's own transports
(aioice for ICE, OpenSSL through pyOpenSSL for DTLS, libsrtp through pylibsrtp for SRTP), as
a WebRTC endpoint would use them. Installed in the repository's .venv by scripts/test.

It offers `UDP/TLS/RTP/SAVPF` with `a=setup:actpass`, its ICE credentials and a host
candidate on 127.0.0.1 (only: the tests stay on loopback), then follows the relay's answer.
One command per line on stdin, one answer per line on stdout:

    (at start)                 -> offer BASE64_SDP
    answer BASE64_SDP          -> connected | failed STATE
    restart BASE64_SDP [ROLE]  -> offer BASE64_SDP, then connected | failed STATE
                                  (a re-INVITE from a relay the call moved to: new ICE and
                                  DTLS transports, the same certificate, the SDP's ICE
                                  credentials, candidates, setup and fingerprint; the new
                                  SDP is what the party answers the re-INVITE with. When the
                                  re-INVITE offers `a=setup:actpass`, the party answers
                                  ROLE, `active` unless `passive` is given, and takes it)
    send HEX                   -> ok            (an RTP packet, SRTP-protected by aiortc)
    recv MILLISECONDS          -> rtp HEX | none (the next RTP packet, as decrypted)
    quit
"""

import asyncio
import base64
import logging
import os
import sys

try:
    import aioice.ice
    from aiortc.rtcdtlstransport import (
        RTCCertificate,
        RTCDtlsFingerprint,
        RTCDtlsParameters,
        RTCDtlsTransport,
    )
    from aiortc.rtcicetransport import RTCIceGatherer, RTCIceParameters, RTCIceTransport
    from aiortc.sdp import candidate_from_sdp, candidate_to_sdp
except ImportError as error:  # the Rust test names the package in its failure
    print(f"missing aiortc: {error}", flush=True)
    sys.exit(3)

if os.environ.get("DTLS_PEER_DEBUG"):
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)

# Host candidates on loopback only (aioice leaves 127.0.0.1 out by default).
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def attributes(sdp, name):
    prefix = f"a={name}:"
    return [line[len(prefix):].strip() for line in sdp.splitlines() if line.startswith(prefix)]


async def main():
    loop = asyncio.get_running_loop()

    async def line():
        return (await loop.run_in_executor(None, sys.stdin.readline)).strip()

    certificate = RTCCertificate.generateCertificate()
    received = asyncio.Queue()

    async def on_rtp(data, arrival_time_ms):
        await received.put(data)

    async def transports():
        gatherer = RTCIceGatherer()
        await gatherer.gather()
        ice = RTCIceTransport(gatherer)
        # The offerer, and a full agent facing an ICE-lite relay: controlling (RFC 8445 §6.1.1).
        ice._connection.ice_controlling = True
        dtls = RTCDtlsTransport(ice, [certificate])
        dtls._handle_rtp_data = on_rtp
        return gatherer, ice, dtls

    gatherer, ice, dtls = await transports()

    def local_offer(gatherer, dtls, setup="actpass"):
        ice_params = gatherer.getLocalParameters()
        candidates = gatherer.getLocalCandidates()
        default = candidates[0]
        fingerprint = next(f for f in dtls.getLocalParameters().fingerprints if f.algorithm == "sha-256")
        offer = "\r\n".join(
            [
                "v=0",
                "o=aiortc 1 1 IN IP4 127.0.0.1",
                "s=-",
                "t=0 0",
                f"m=audio {default.port} UDP/TLS/RTP/SAVPF 0",
                f"c=IN IP4 {default.ip}",
                "a=rtpmap:0 PCMU/8000",
                "a=sendrecv",
                "a=rtcp-mux",
                f"a=ice-ufrag:{ice_params.usernameFragment}",
                f"a=ice-pwd:{ice_params.password}",
            ]
            + [f"a=candidate:{candidate_to_sdp(c)}" for c in candidates]
            + [
                "a=end-of-candidates",
                f"a=fingerprint:sha-256 {fingerprint.value}",
                f"a=setup:{setup}",
                "",
            ]
        )
        return offer

    offer = local_offer(gatherer, dtls)
    print("offer " + base64.b64encode(offer.encode()).decode(), flush=True)

    while True:
        command = await line()
        if not command or command == "quit":
            break
        verb, _, argument = command.partition(" ")
        chosen = None
        if verb == "restart":
            argument, _, chosen = argument.partition(" ")
            moved = base64.b64decode(argument).decode()
            chosen = chosen or "active"
            if attributes(moved, "setup")[0] != "actpass":
                chosen = None
            # aiortc's RTCPeerConnection has no ICE restart and keeps one DTLS transport per
            # connection; a moved call needs both anew, as a WebRTC endpoint makes them.
            await dtls.stop()
            await ice.stop()
            gatherer, ice, dtls = await transports()
            offer = local_offer(gatherer, dtls, chosen or "actpass")
            print("offer " + base64.b64encode(offer.encode()).decode(), flush=True)
            verb = "answer"
        if verb == "answer":
            answer = base64.b64decode(argument).decode()
            remote = RTCIceParameters(
                usernameFragment=attributes(answer, "ice-ufrag")[0],
                password=attributes(answer, "ice-pwd")[0],
                iceLite=any(l.strip() == "a=ice-lite" for l in answer.splitlines()),
            )
            for value in attributes(answer, "candidate"):
                candidate = candidate_from_sdp(value)
                candidate.sdpMid = None
                await ice.addRemoteCandidate(candidate)
            await ice.addRemoteCandidate(None)
            setup = attributes(answer, "setup")[0]
            # The relay answered active: this party is the DTLS server; passive: the client.
            # The relay offered actpass (a move): the role this party chose.
            if setup == "actpass":
                dtls._set_role("client" if chosen == "active" else "server")
            else:
                dtls._set_role("server" if setup == "active" else "client")
            fingerprints = [
                RTCDtlsFingerprint(algorithm=v.split()[0], value=v.split()[1])
                for v in attributes(answer, "fingerprint")
            ]
            try:
                await asyncio.wait_for(ice.start(remote), timeout=10)
                await asyncio.wait_for(
                    dtls.start(RTCDtlsParameters(fingerprints=fingerprints)), timeout=10
                )
            except Exception as error:  # reported, the test decides
                print(f"failed {ice.state}/{dtls.state}: {error!r}", flush=True)
                continue
            if dtls.state == "connected":
                print("connected", flush=True)
            else:
                print(f"failed {ice.state}/{dtls.state}", flush=True)
        elif verb == "send":
            await dtls._send_rtp(bytes.fromhex(argument))
            print("ok", flush=True)
        elif verb == "recv":
            try:
                data = await asyncio.wait_for(received.get(), timeout=int(argument) / 1000)
                print("rtp " + data.hex(), flush=True)
            except asyncio.TimeoutError:
                print("none", flush=True)
        else:
            print(f"unknown command {verb}", flush=True)
    await dtls.stop()
    await ice.stop()


asyncio.run(main())
