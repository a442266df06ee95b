//! The proxy core: RFC 3261 transaction state machines, forwarding, dialogs and re-anchoring, driven by handle_*/poll_* with an injected clock (sans-IO).
