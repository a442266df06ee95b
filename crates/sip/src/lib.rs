//! SIP message layer: byte-preserving lazy parser, header index, typed views, edit list and message builders (sans-IO).
