//! Cuts a streamed LLM reply into sentences, so that speech synthesis can
//! start on the first complete sentence rather than at the end of the reply.

/// A sentence shorter than this is kept with the next one ("Oui." alone
/// would make a choppy phrase).
const MIN_SENTENCE_CHARS: usize = 12;

/// French abbreviations whose period ends no sentence ("M. Dupont",
/// "Mme. Martin", "le Dr. Roux"); "etc." ends one unless the text goes on
/// in lower case, like any period.
const ABBREVIATIONS: &[&str] = &[
    "M", "MM", "Mme", "Mmes", "Mlle", "Mlles", "Dr", "Drs", "Pr", "Me", "Mgr", "St", "Ste", "Cie",
    "av", "bd", "tél", "Tél", "cf", "env", "p", "n°", "No",
];

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

    /// Byte index just past the first sentence end, when the sentence is
    /// long enough. An end is a terminator followed by a space (so "3.5"
    /// and "14:30" are not cut) and, for `.`, `!`, `?` and `…`, by a word
    /// that does not go on in lower case ("etc. et puis", "Ah ? bon"): until
    /// that word has come, the sentence waits. A period after a French
    /// abbreviation ("M. Dupont") or an initial ("J. Martin") ends nothing.
    /// `;` and `:` end a clause that can be said alone.
    fn sentence_end(&self) -> Option<usize> {
        let text = &self.pending;
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if !matches!(c, '.' | '!' | '?' | '…' | ';' | ':') {
                continue;
            }
            let end = i + c.len_utf8();
            if !chars.peek().is_some_and(|&(_, n)| n.is_whitespace()) {
                continue;
            }
            if text[..end].trim().chars().count() < MIN_SENTENCE_CHARS {
                continue;
            }
            if matches!(c, ';' | ':') {
                return Some(end);
            }
            if c == '.' && after_abbreviation(&text[..i]) {
                continue;
            }
            match text[end..].trim_start().chars().next() {
                // The next word decides; it has not come yet.
                None => return None,
                Some(n) if n.is_lowercase() => continue,
                Some(_) => return Some(end),
            }
        }
        None
    }
}

/// Whether `before` (the text up to a period) ends with an abbreviation
/// or an initial.
fn after_abbreviation(before: &str) -> bool {
    let word = before
        .rsplit(|c: char| c.is_whitespace() || c == '(' || c == '\'' || c == '’')
        .next()
        .unwrap_or("");
    let mut letters = word.chars();
    let initial = matches!((letters.next(), letters.next()), (Some(l), None) if l.is_uppercase());
    initial || ABBREVIATIONS.contains(&word)
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
        assert!(s.push("Oui. D'accord, c'est noté. ").is_empty());
        assert_eq!(s.push("Et"), vec!["Oui. D'accord, c'est noté."]);
    }

    #[test]
    fn french_abbreviations_initials_numbers_and_times_cut_nothing() {
        let mut s = SentenceSplitter::new();
        let reply = "Bonjour, j'ai vu votre dossier avec M. Dupont et Mme. Martin du service. \
                     Le Dr. Roux et J. Martin ont noté 3.5 Mbit/s, des coupures, etc. et depuis \
                     hier à 14 h 30 ou 14:30, plus rien. Débranchez la box ; attendez dix secondes.";
        let mut sentences = Vec::new();
        // Streamed a few characters at a time, as an LLM does.
        let chars: Vec<char> = reply.chars().collect();
        for piece in chars.chunks(3) {
            sentences.extend(s.push(&piece.iter().collect::<String>()));
        }
        sentences.extend(s.finish());
        assert_eq!(
            sentences,
            [
                "Bonjour, j'ai vu votre dossier avec M. Dupont et Mme. Martin du service.",
                "Le Dr. Roux et J. Martin ont noté 3.5 Mbit/s, des coupures, etc. et depuis hier à 14 h 30 ou 14:30, plus rien.",
                "Débranchez la box ;",
                "attendez dix secondes.",
            ]
        );
        // "etc." before a new sentence ends the sentence.
        let mut s = SentenceSplitter::new();
        assert_eq!(
            s.push("Vérifiez les câbles, la prise, etc. Puis rappelez"),
            vec!["Vérifiez les câbles, la prise, etc."]
        );
    }
}
