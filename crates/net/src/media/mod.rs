//! Media fast path.
