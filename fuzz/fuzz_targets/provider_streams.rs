//! What a provider streams back, cut anywhere: server-sent events and the
//! chat chunks in them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sav::providers::llm::ChatStreamDecoder;
use sav::providers::sse::SseDecoder;

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let (a, b) = data.split_at(cut);
    let mut sse = SseDecoder::new();
    let _ = sse.feed(a);
    let _ = sse.feed(b);
    let mut chat = ChatStreamDecoder::new();
    let _ = chat.feed(a);
    let _ = chat.feed(b);
    let _ = sav::redact::secrets(&String::from_utf8_lossy(data));
});
