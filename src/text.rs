//! Small text helpers shared by the layers.

/// At most `max` bytes of `text`, cut on a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_character_boundaries() {
        assert_eq!(cut("abc", 10), "abc");
        assert_eq!(cut("éé", 3), "é");
        assert_eq!(cut("éé", 1), "");
    }
}
