//! Empty: the comparison lives in benches/sipcmp.rs.
