//! SDP as ordered lines with typed views of the lines a relay rewrites; offer/answer helpers (sans-IO).
