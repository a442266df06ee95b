//! Feed arbitrary bytes to the TCP stream framer in chunks whose sizes come from the input.
//! Must never panic, and every frame it returns must be a prefix-consistent slice of the input.
#![no_main]

use anchorage_sip::{Message, StreamFramer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut f = StreamFramer::with_limits(4096, 4096);
    let mut framed = 0usize;
    for piece in rest.chunks(chunk) {
        f.push(piece);
        loop {
            match f.next_message() {
                Ok(Some(frame)) => {
                    framed += frame.len();
                    assert!(framed <= rest.len());
                    let _ = Message::parse(frame).map(|m| m.validate());
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        let _ = f.take_pings();
    }
});
