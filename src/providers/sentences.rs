//! Cuts a streamed LLM reply into sentences, so that speech synthesis can
//! start on the first complete sentence rather than at the end of the reply.

/// A sentence shorter than this is kept with the next one ("Oui." alone
/// would make a choppy phrase).
const MIN_SENTENCE_CHARS: usize = 12;

#[derive(Debug, Default)]
pub struct SentenceSplitter {
    pending: String,
}

impl SentenceSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds streamed text; returns the sentences it completes.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        self.pending.push_str(text);
        let mut out = Vec::new();
        while let Some(end) = self.sentence_end() {
            let sentence: String = self.pending[..end].trim().to_string();
            self.pending.drain(..end);
            if !sentence.is_empty() {
                out.push(sentence);
            }
        }
        out
    }

    /// The rest, at the end of the stream.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.pending);
        let rest = rest.trim();
        (!rest.is_empty()).then(|| rest.to_string())
    }

    /// Byte index just past the first sentence end followed by a space (so
    /// "3.5" and "M. Dupont" mid-stream are not cut), when the sentence is
    /// long enough.
    fn sentence_end(&self) -> Option<usize> {
        let mut chars = self.pending.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if matches!(c, '.' | '!' | '?' | '…' | ';' | ':') {
                let next = chars.peek().map(|&(_, n)| n);
                let end = i + c.len_utf8();
                if next.is_some_and(char::is_whitespace)
                    && self.pending[..end].trim().chars().count() >= MIN_SENTENCE_CHARS
                {
                    return Some(end);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_come_out_as_soon_as_they_end() {
        let mut s = SentenceSplitter::new();
        assert!(s.push("Bonjour Monsieur Dupont").is_empty());
        assert_eq!(
            s.push(", je vois votre ticket. Redé"),
            vec!["Bonjour Monsieur Dupont, je vois votre ticket."]
        );
        assert!(s.push("marrez la box").is_empty());
        assert_eq!(
            s.push(" ! Puis attendez 3.5 minutes"),
            vec!["Redémarrez la box !"]
        );
        assert_eq!(s.finish(), Some("Puis attendez 3.5 minutes".into()));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn short_sentences_join_the_next() {
        let mut s = SentenceSplitter::new();
        assert_eq!(
            s.push("Oui. D'accord, c'est noté. "),
            vec!["Oui. D'accord, c'est noté."]
        );
    }
}
