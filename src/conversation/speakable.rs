//! Generated text made fit to be spoken: an LLM asked for short spoken
//! sentences still sends markdown, lists, links and emojis now and then, and
//! a TTS reads them out ("astérisque astérisque"). What is left is plain
//! sentences on one line.

pub use crate::text::cut;

/// `text` without markdown, list markers, links, URLs or symbols.
pub fn sanitise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut line = line.trim_start();
        // Headings, quotes, list markers: "# ", "> ", "- ", "* ", "• ", "1. ", "2) ".
        line = line.trim_start_matches(['#', '>']).trim_start();
        for marker in ["- ", "* ", "• ", "+ "] {
            if let Some(rest) = line.strip_prefix(marker) {
                line = rest;
            }
        }
        let digits = line.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && digits < 3 {
            if let Some(rest) = line[digits..]
                .strip_prefix(". ")
                .or_else(|| line[digits..].strip_prefix(") "))
            {
                line = rest;
            }
        }
        if !out.is_empty() && !line.is_empty() {
            out.push(' ');
        }
        push_plain(&mut out, line);
    }
    // One space between words; only punctuation left is nothing to say.
    if !out.chars().any(char::is_alphanumeric) {
        return String::new();
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Appends `line` without links' targets, URLs and symbols.
fn push_plain(out: &mut String, line: &str) {
    let mut rest = line;
    while !rest.is_empty() {
        // [text](url) → text
        if let Some(after) = rest.strip_prefix('[') {
            if let Some(close) = after.find("](") {
                if let Some(end) = after[close + 2..].find(')') {
                    push_plain(out, &after[..close]);
                    rest = &after[close + 2 + end + 1..];
                    continue;
                }
            }
        }
        if rest.starts_with("http://") || rest.starts_with("https://") || rest.starts_with("www.") {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            rest = &rest[end..];
            continue;
        }
        let Some(c) = rest.chars().next() else { break };
        rest = &rest[c.len_utf8()..];
        if c.is_alphanumeric() || c.is_whitespace() || ".,;:!?'’\"«»()-–—%€$/&+°".contains(c)
        {
            out.push(c);
        } else if c == '\t' {
            out.push(' ');
        }
        // Everything else (*, _, `, ~, |, emojis, symbols) is dropped.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_lists_links_and_emojis_are_not_spoken() {
        assert_eq!(
            sanitise("**Bravo Pierre** 🎉, _excellent_ travail !"),
            "Bravo Pierre , excellent travail !"
        );
        assert_eq!(
            sanitise("# Étapes\n1. Débranchez la box.\n2) Attendez.\n- Rebranchez-la.\n* Voilà"),
            "Étapes Débranchez la box. Attendez. Rebranchez-la. Voilà"
        );
        assert_eq!(
            sanitise("Voir [la page d'aide](https://example.com/aide) ou https://x.y/z ici."),
            "Voir la page d'aide ou ici."
        );
        assert_eq!(sanitise("`code` | tableau |"), "code tableau");
        assert_eq!(sanitise("🎉🎉"), "");
        assert_eq!(sanitise("😀 !"), "", "punctuation alone is nothing to say");
        assert_eq!(sanitise("  "), "");
        assert_eq!(
            sanitise("Il fait 20 °C, 5 € ; d'accord ?"),
            "Il fait 20 °C, 5 € ; d'accord ?"
        );
    }
}
