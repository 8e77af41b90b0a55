//! Whether the caller's words so far leave their turn open: a small French
//! rule set over a streaming recogniser's partial transcript, one of the
//! signals of the end of a turn (with how the voice closes,
//! `media::prosody`).
//!
//! A turn is open when its words so far end on a comma or an ellipsis, an
//! elision ("qu'", "l'"), a hesitation ("euh"), a word that needs what
//! follows (a conjunction, a preposition, an article or determiner, a
//! subject pronoun, "c'est"…), or a number being dictated (two number words
//! or digit groups in a row: "zéro six douze"). A sentence's full stop, a
//! question mark and anything else leave it to the voice.

/// Words after which a French sentence goes on.
const OPEN_WORDS: &[&str] = &[
    // Hesitations.
    "euh", "heu", "euhh", "hum", "hmm", "bah", "ben", // Conjunctions.
    "et", "mais", "ou", "donc", "car", "ni", "puis", "ensuite", "alors", "que", "qui", "quand",
    "si", "comme", "parce", "lorsque", "puisque", "dont", "où", "quoi", // Prepositions.
    "de", "du", "des", "à", "au", "aux", "en", "pour", "par", "avec", "sur", "sous", "dans",
    "sans", "chez", "vers", "depuis", "pendant", "entre", "après", "avant", "contre", "selon",
    // Articles and determiners.
    "le", "la", "les", "un", "une", "mon", "ma", "mes", "ton", "ta", "tes", "son", "sa", "ses",
    "notre", "nos", "votre", "vos", "leur", "leurs", "ce", "cet", "cette", "ces", "quel", "quelle",
    "quels", "quelles", // Subject pronouns and verbs that need what follows.
    "je", "tu", "il", "elle", "on", "nous", "vous", "ils", "elles", "y", "ne", "est", "sont",
    "suis", "ai", "avez", "était", "c'est", "c’est", "voudrais", "veux", "dois", "peux",
];

/// Number words of a dictated number (with the compounds made of them).
const NUMBER_WORDS: &[&str] = &[
    "zéro",
    "un",
    "deux",
    "trois",
    "quatre",
    "cinq",
    "six",
    "sept",
    "huit",
    "neuf",
    "dix",
    "onze",
    "douze",
    "treize",
    "quatorze",
    "quinze",
    "seize",
    "vingt",
    "vingts",
    "trente",
    "quarante",
    "cinquante",
    "soixante",
    "cent",
    "cents",
    "mille",
    "et",
];

/// Whether the caller's words so far leave the turn open.
pub fn sounds_unfinished(text: &str) -> bool {
    let text = text.trim();
    let Some(last) = text.chars().last() else {
        return false;
    };
    match last {
        ',' | ';' | ':' | '…' | '-' | '\'' | '’' => return true,
        '.' => return text.ends_with("..."),
        '?' | '!' => return false,
        _ => {}
    }
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric() && c != '\'' && c != '’' && c != '-')
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect();
    let Some(last) = words.last() else {
        return false;
    };
    if OPEN_WORDS.contains(&last.as_str()) {
        return true;
    }
    let dictated = words.iter().rev().take_while(|w| is_number(w)).count();
    dictated >= 2
}

/// A number word, a compound of them ("trente-quatre", "vingt-et-un"), or
/// digits.
fn is_number(word: &str) -> bool {
    if word.chars().all(|c| c.is_ascii_digit()) {
        return true;
    }
    word != "et" && word.split('-').all(|part| NUMBER_WORDS.contains(&part))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_that_need_what_follows_leave_the_turn_open() {
        for open in [
            "Ma box internet,",
            "Je voudrais euh",
            "Je voudrais",
            "Alors euh",
            "Le problème c'est que",
            "J'ai débranché la box et",
            "Le code d'erreur c'est le",
            "Mon numéro client c'est le zéro six",
            "zéro six douze trente-quatre",
            "06 12 34",
            "Mon adresse c'est douze rue de la",
            "Le numéro de série commence par",
            "Parce que",
            "Je pense que...",
            "Attendez, je regarde derrière la…",
            "Il m'a dit qu'",
        ] {
            assert!(sounds_unfinished(open), "{open:?} sounds finished");
        }
    }

    #[test]
    fn a_sentence_that_closes_leaves_it_to_the_voice() {
        for closed in [
            "",
            "Ma box internet ne marche plus.",
            "Ma box internet ne marche plus",
            "Oui",
            "Non merci",
            "Le voyant clignote en rouge",
            "Est-ce que je dois la redémarrer ?",
            "Ça fonctionne maintenant, merci !",
            "J'ai attendu dix secondes",
            "Le code c'est 4",
            "Il est vingt heures",
            "C'est bon",
        ] {
            assert!(!sounds_unfinished(closed), "{closed:?} sounds unfinished");
        }
    }
}
