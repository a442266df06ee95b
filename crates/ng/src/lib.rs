//! The rtpengine ng control protocol: bencode/JSON codec, typed commands, flag normaliser, reply cache and client retransmission (sans-IO).
