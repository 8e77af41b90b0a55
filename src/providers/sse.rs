//! Server-sent events (the `text/event-stream` format of the WHATWG HTML
//! standard, §9.2) as OpenAI-compatible chat completions stream them,
//! sans-IO: bytes in, in whatever pieces the network delivers, events out.
//!
//! Lines may be split anywhere between two reads, a multi-byte UTF-8
//! character included; line ends are LF, CRLF or CR; `data:` lines of one
//! event are joined with LF; a blank line ends the event; comments (`:`) and
//! other fields are ignored. A line longer than [`MAX_LINE`] is an error
//! rather than unbounded memory.

/// Longest line we accept (a chat chunk is a few hundred bytes).
pub const MAX_LINE: usize = 1 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SseError {
    #[error("event-stream line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("event-stream line is not UTF-8")]
    NotUtf8,
}

#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes of the line being read.
    line: Vec<u8>,
    /// The previous byte was CR: a following LF belongs to the same line end.
    after_cr: bool,
    /// `data:` of the event being read.
    data: String,
    has_data: bool,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the data of every event they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<String>, SseError> {
        let mut events = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    if let Some(event) = self.end_line()? {
                        events.push(event);
                    }
                }
                _ => {
                    if self.line.len() >= MAX_LINE {
                        return Err(SseError::LineTooLong);
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(events)
    }

    fn end_line(&mut self) -> Result<Option<String>, SseError> {
        let line = std::str::from_utf8(&self.line).map_err(|_| SseError::NotUtf8)?;
        let event = if line.is_empty() {
            // Dispatch.
            if self.has_data {
                self.has_data = false;
                Some(std::mem::take(&mut self.data))
            } else {
                None
            }
        } else {
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line, ""),
            };
            if field == "data" {
                if self.data.len() + value.len() > MAX_LINE {
                    return Err(SseError::LineTooLong);
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            None
        };
        self.line.clear();
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_at_every_byte_come_out_whole() {
        let stream = "data: {\"a\":\"é€😀\"}\r\n\r\n: keep-alive\n\ndata: one\ndata: two\n\nevent: x\nid: 3\ndata: [DONE]\n\n";
        let whole = SseDecoder::new().feed(stream.as_bytes()).unwrap();
        assert_eq!(whole, vec!["{\"a\":\"é€😀\"}", "one\ntwo", "[DONE]"]);
        // Byte by byte: UTF-8 characters and CRLF split across reads.
        let mut d = SseDecoder::new();
        let mut pieces = Vec::new();
        for b in stream.as_bytes() {
            pieces.extend(d.feed(std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(pieces, whole);
    }

    #[test]
    fn cr_only_line_ends_and_no_space_after_colon() {
        let mut d = SseDecoder::new();
        assert_eq!(d.feed(b"data:x\r\rdata:y\r").unwrap(), vec!["x"]);
        assert_eq!(d.feed(b"\r").unwrap(), vec!["y"]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic_or_a_leak() {
        let mut d = SseDecoder::new();
        assert_eq!(d.feed(&[b'd', 0xff, 0xfe, b'\n']), Err(SseError::NotUtf8));
        let mut d = SseDecoder::new();
        let long = vec![b'a'; MAX_LINE + 1];
        assert_eq!(d.feed(&long), Err(SseError::LineTooLong));
    }
}
