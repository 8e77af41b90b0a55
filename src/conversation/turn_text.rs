//! Whether the caller's words so far leave their turn open: a small French
//! rule set over a streaming recogniser's partial transcript, one of the
//! signals of the end of a turn (with how the voice closes,
//! `media::prosody`).
//!
//! A turn is open when its words so far end on a comma or an ellipsis, an
//! elision ("qu'", "l'"), a hesitation ("euh"), a word that needs what
//! follows (a conjunction, a preposition, an article or determiner, a
//! subject pronoun, "je voudrais"…), or a number being dictated (two number words
//! or digit groups in a row: "zéro six douze"). A sentence's full stop, a
//! question mark and anything else leave it to the voice.

/// Words after which a French sentence goes on. Left out: words that end
/// finished sentences as often ("avant", "après", "où", "quoi", "qui",
/// "quand", "alors", "donc", "si", "vous", "nous", "elle", "c'est", "un",
/// "suis", "dois": "Ça marchait avant", "C'est quoi", "Merci à vous", "Je
/// sais pas ce que c'est", "J'en ai un", "Combien je vous dois").
const OPEN_WORDS: &[&[&str]] = &[
    HESITATIONS,
    CONJUNCTIONS,
    PREPOSITIONS,
    DETERMINERS,
    NEED_MORE,
];
const HESITATIONS: &[&str] = &["euh", "heu", "euhh", "hum", "hmm"];
const CONJUNCTIONS: &[&str] = &[
    "et", "mais", "ou", "car", "ni", "puis", "ensuite", "que", "parce", "lorsque", "puisque",
    "dont",
];
const PREPOSITIONS: &[&str] = &[
    "de", "du", "des", "à", "au", "aux", "en", "pour", "par", "avec", "sur", "sous", "dans",
    "sans", "chez", "vers", "depuis", "pendant", "entre", "contre", "selon",
];
/// Articles and determiners.
const DETERMINERS: &[&str] = &[
    "le", "la", "les", "une", "mon", "ma", "mes", "ton", "ta", "tes", "son", "sa", "ses", "notre",
    "nos", "votre", "vos", "leur", "leurs", "ce", "cet", "cette", "ces", "quel", "quelle", "quels",
    "quelles",
];
/// Subject pronouns and verbs that need what follows.
const NEED_MORE: &[&str] = &[
    "je", "tu", "il", "on", "ils", "ne", "est", "sont", "ai", "était", "voudrais", "veux", "peux",
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
    if OPEN_WORDS
        .iter()
        .any(|words| words.contains(&last.as_str()))
    {
        return true;
    }
    // Two number words or digit groups in a row, as a number is dictated
    // ("zéro six douze"); a quantity or a year ("deux mille vingt") is not.
    let dictated: Vec<&String> = words.iter().rev().take_while(|w| is_number(w)).collect();
    dictated.len() >= 2
        && !dictated.iter().any(|w| {
            w.split('-')
                .any(|part| matches!(part, "cent" | "cents" | "mille"))
        })
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
            "Ça marchait avant",
            "Je rappelle après",
            "J'en ai un",
            "Merci à vous",
            "Elle est où",
            "C'est quoi",
            "Je sais pas ce que c'est",
            "Je fais comment alors",
            "Si",
            "Combien je vous dois",
            "Vous l'avez",
            "Je l'ai depuis deux mille vingt",
        ] {
            assert!(!sounds_unfinished(closed), "{closed:?} sounds unfinished");
        }
    }
}
