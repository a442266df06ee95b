#!/usr/bin/env python3
"""SRTP made by an independent implementation for tests/relay.rs: libsrtp, through the PyPI
package pylibsrtp (installed in the repository's .venv by scripts/test).

One command per line on stdin, one answer per line on stdout:

    session NAME inbound|outbound SUITE BASE64_KEY   -> ok
    protect NAME rtp|rtcp HEX                        -> ok HEX
    unprotect NAME rtp|rtcp HEX                      -> ok HEX | fail REASON

`outbound` sessions protect (the party encrypting with its own key), `inbound` sessions
unprotect (the party decrypting with the key the relay advertised to it).
"""

import base64
import binascii
import sys

try:
    from pylibsrtp import Error, Policy, Session
except ImportError as error:  # the Rust test names the package in its failure
    print(f"missing pylibsrtp: {error}", flush=True)
    sys.exit(3)

PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}
for name, attribute in [
    ("AEAD_AES_128_GCM", "SRTP_PROFILE_AEAD_AES_128_GCM"),
    ("AEAD_AES_256_GCM", "SRTP_PROFILE_AEAD_AES_256_GCM"),
]:
    if hasattr(Policy, attribute):
        PROFILES[name] = getattr(Policy, attribute)


def main():
    sessions = {}
    print("ready " + " ".join(sorted(PROFILES)), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        try:
            if words[0] == "session":
                name, direction, suite, key = words[1:5]
                key = base64.b64decode(key + "=" * (-len(key) % 4))
                ssrc_type = (
                    Policy.SSRC_ANY_INBOUND
                    if direction == "inbound"
                    else Policy.SSRC_ANY_OUTBOUND
                )
                policy = Policy(key=key, ssrc_type=ssrc_type, srtp_profile=PROFILES[suite])
                sessions[name] = Session(policy=policy)
                print("ok", flush=True)
            elif words[0] in ("protect", "unprotect"):
                name, kind, data = words[1:4]
                session = sessions[name]
                packet = binascii.unhexlify(data)
                if words[0] == "protect":
                    out = session.protect_rtcp(packet) if kind == "rtcp" else session.protect(packet)
                else:
                    out = (
                        session.unprotect_rtcp(packet)
                        if kind == "rtcp"
                        else session.unprotect(packet)
                    )
                print("ok " + binascii.hexlify(out).decode(), flush=True)
            else:
                print("fail unknown command " + words[0], flush=True)
        except Error as error:
            print(f"fail {error}", flush=True)
        except Exception as error:  # a bad request from the test: say so, keep serving
            print(f"fail {type(error).__name__}: {error}", flush=True)


if __name__ == "__main__":
    main()
