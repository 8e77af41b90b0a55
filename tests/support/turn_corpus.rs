//! A French turn-taking corpus spoken by espeak-ng (two voices), at 8 kHz
//! through μ-law like a phone line, and the end-of-turn figures of the VAD
//! over it: how long after the end of a finished turn the VAD ends it, and
//! how many unfinished turns (a pause after "Ma box internet," or in a
//! dictated number, a hesitation) it cuts into.
//!
//! Built once into `target/turn-corpus/` (needs espeak-ng and sox); used by
//! `tests/turn_end.rs` and `examples/turn_end_bench.rs`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sav::media::g711;
use sav::media::vad::{TurnDetector, TurnEvent, VadConfig, FRAME_SAMPLES};

/// Finished turns: statements as callers make them.
pub const FINISHED: &[&str] = &[
    "Ma box internet ne marche plus.",
    "Le voyant de la box clignote en rouge.",
    "Je n'ai plus de télévision depuis ce matin.",
    "Oui, c'est fait.",
    "Non, ça ne marche toujours pas.",
    "J'ai redémarré le décodeur.",
    "Internet est très lent le soir.",
    "Mon téléphone fixe ne sonne plus.",
    "Je voudrais parler à un conseiller.",
    "Le câble est bien branché.",
    "Ça fonctionne maintenant, merci.",
    "Je n'arrive pas à me connecter au wifi.",
    "La télé affiche un écran noir.",
    "J'ai débranché la box pendant dix secondes.",
    "Il n'y a plus de tonalité sur la ligne.",
    "Le décodeur ne s'allume plus.",
    "Oui.",
    "Non.",
    "D'accord, je vais essayer.",
    "Mon abonnement a été coupé par erreur.",
    "La connexion coupe toutes les cinq minutes.",
    "Je n'ai reçu aucune facture ce mois-ci.",
    "Tout est rentré dans l'ordre.",
    "Je suis chez moi en ce moment.",
    "La box est posée dans le salon.",
    "Le wifi ne passe pas dans la chambre.",
    "J'ai changé de câble HDMI.",
    "Les chaînes sont brouillées.",
    "Je vous appelle pour un problème de connexion.",
    "C'est la troisième fois que j'appelle.",
    "Le technicien devait passer hier.",
    "Oui, le voyant est vert maintenant.",
    "Je ne vois pas de bouton.",
    "Ça ne change rien.",
    "C'est bon, la télé remarche.",
    "J'ai un message d'erreur sur l'écran.",
    "Le son est coupé sur toutes les chaînes.",
    "Ma ligne est en dérangement.",
    "Merci beaucoup, au revoir.",
    "Je préfère être rappelé demain.",
    "Le modem fait un bruit bizarre.",
    "Voilà, c'est rebranché.",
];

/// Unfinished turns: `|` is where the caller pauses (700 ms, with the
/// voice's own pause at a comma 0.7 to 0.9 s of silence) and goes on.
pub const UNFINISHED: &[&str] = &[
    "Ma box internet, | ne marche plus depuis hier.",
    "Alors, | le voyant de la box clignote.",
    "Mon numéro client, c'est le zéro six, | douze trente-quatre.",
    "Je voudrais, euh, | parler à quelqu'un.",
    "Le problème, | c'est que la télé ne s'allume plus.",
    "J'ai débranché la box, | et j'ai attendu dix secondes.",
    "Quand j'allume le décodeur, | il reste bloqué.",
    "Le code d'erreur, c'est le, | S zéro trois.",
    "Depuis la mise à jour de lundi, | plus rien ne marche.",
    "Si je comprends bien, | il faut tout rebrancher.",
    "Mon adresse, c'est douze, | rue de la Paix.",
    "En fait, | c'est surtout le soir.",
    "J'ai essayé avec le câble, | mais ça ne change rien.",
    "Parce que, euh, | le wifi coupe.",
    "Mon téléphone, | enfin le fixe, ne sonne plus.",
    "Le technicien m'a dit, | de vous rappeler.",
    "Alors euh, | la télé affiche un écran noir.",
    "Je pense que, | c'est la box.",
    "Le numéro de série commence par, | A B douze.",
    "Hier soir, | vers vingt heures, tout a coupé.",
    "Attendez, | je regarde derrière la box.",
    "Le voyant, | il est orange.",
];

/// espeak-ng voices the corpus is spoken in.
pub const VOICES: &[&str] = &["fr", "fr+f3"];

/// One turn of the corpus.
pub struct Turn {
    pub text: &'static str,
    pub voice: &'static str,
    pub finished: bool,
    /// 8 kHz, through μ-law and back.
    pub pcm: Vec<i16>,
    /// Sample after the last of the words.
    pub speech_end: usize,
    /// The caller's pauses inside the turn: (start, end) samples.
    pub pauses: Vec<(usize, usize)>,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/turn-corpus")
}

/// The corpus, spoken once (kept in `target/turn-corpus/`).
pub fn build() -> Vec<Turn> {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).expect("corpus directory");
    let mut turns = Vec::new();
    for (texts, finished) in [(FINISHED, true), (UNFINISHED, false)] {
        for &text in texts {
            for &voice in VOICES {
                let pcm = spoken(&dir, text, voice);
                let (speech_end, pauses) = speech_of(&pcm);
                turns.push(Turn {
                    text,
                    voice,
                    finished,
                    pcm,
                    speech_end,
                    pauses,
                });
            }
        }
    }
    turns
}

/// `text` said in `voice` at 8 kHz through μ-law (`|` a 700 ms pause),
/// rendered once into the corpus directory.
pub fn say(text: &str, voice: &str) -> Vec<i16> {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).expect("corpus directory");
    spoken(&dir, text, voice)
}

/// `text` in `voice` at 8 kHz through μ-law, from the cache or espeak-ng.
fn spoken(dir: &Path, text: &str, voice: &str) -> Vec<i16> {
    let key = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let name = format!("{}-{key:016x}", voice.replace('+', "_"));
    let wav = dir.join(format!("{name}.wav"));
    if !wav.exists() {
        let ssml = format!(
            "<speak>{}</speak>",
            text.replace('|', "<break time=\"700ms\"/>")
        );
        let raw = dir.join(format!("{name}-22k.wav"));
        let status = Command::new("espeak-ng")
            .args(["-m", "-v", voice, "-w"])
            .arg(&raw)
            .arg(&ssml)
            .status()
            .expect("espeak-ng runs");
        assert!(status.success(), "espeak-ng {voice} {text:?}");
        let status = Command::new("sox")
            .arg(&raw)
            .args(["-r", "8000", "-c", "1", "-b", "16"])
            .arg(&wav)
            .status()
            .expect("sox runs");
        assert!(status.success(), "sox {raw:?}");
        let _ = std::fs::remove_file(&raw);
    }
    let reader = hound::WavReader::open(&wav).expect("corpus wav");
    reader
        .into_samples::<i16>()
        .map(|s| g711::decode(g711::encode(s.unwrap_or(0))))
        .collect()
}

/// Where the words end, and the pauses of 400 ms or more between words
/// (by 10 ms level).
fn speech_of(pcm: &[i16]) -> (usize, Vec<(usize, usize)>) {
    const STEP: usize = 80;
    let loud: Vec<bool> = pcm
        .chunks(STEP)
        .map(|c| c.iter().map(|s| i32::from(*s).abs()).sum::<i32>() / c.len() as i32 > 150)
        .collect();
    let first = loud.iter().position(|&l| l).unwrap_or(0);
    let last = loud.iter().rposition(|&l| l).unwrap_or(0);
    let mut pauses = Vec::new();
    let mut run_start = None;
    for (i, &l) in loud.iter().enumerate().take(last + 1).skip(first) {
        match (l, run_start) {
            (false, None) => run_start = Some(i),
            (true, Some(start)) => {
                if (i - start) * STEP >= 3200 {
                    pauses.push((start * STEP, i * STEP));
                }
                run_start = None;
            }
            _ => {}
        }
    }
    ((last + 1) * STEP, pauses)
}

/// The turn through the VAD (then 2 s of silence): the samples at which it
/// said "the turn ended".
pub fn ends(turn: &Turn, config: &VadConfig) -> Vec<usize> {
    let mut detector = TurnDetector::new(config.clone());
    let t0 = Instant::now();
    let silence = vec![0i16; 16_000];
    let mut ends = Vec::new();
    for (n, block) in turn
        .pcm
        .iter()
        .chain(&silence)
        .copied()
        .collect::<Vec<i16>>()
        .chunks(FRAME_SAMPLES)
        .enumerate()
    {
        let at = (n + 1) * FRAME_SAMPLES;
        let now = t0 + Duration::from_micros(at as u64 * 125);
        if let Some(TurnEvent::SpeechEnded { .. }) = detector.push(now, block) {
            ends.push(at);
        }
    }
    ends
}

/// The corpus's end-of-turn figures for one VAD setting.
#[derive(Debug)]
pub struct Figures {
    /// Finished turns: ms from the end of the words to the VAD's end,
    /// sorted.
    pub latencies: Vec<u64>,
    /// Finished turns the VAD never ended, or ended inside.
    pub finished_missed: usize,
    /// Unfinished turns the VAD ended inside a pause (a cut-in), of all.
    pub cut_ins: usize,
    pub unfinished: usize,
    pub finished: usize,
}

impl Figures {
    pub fn median(&self) -> u64 {
        self.latencies
            .get(self.latencies.len() / 2)
            .copied()
            .unwrap_or(u64::MAX)
    }

    pub fn p90(&self) -> u64 {
        let n = self.latencies.len();
        self.latencies
            .get((n * 9) / 10)
            .copied()
            .unwrap_or(u64::MAX)
    }

    pub fn cut_in_rate(&self) -> f64 {
        self.cut_ins as f64 / self.unfinished.max(1) as f64
    }
}

pub fn figures(turns: &[Turn], config: &VadConfig) -> Figures {
    let mut figures = Figures {
        latencies: Vec::new(),
        finished_missed: 0,
        cut_ins: 0,
        unfinished: 0,
        finished: 0,
    };
    for turn in turns {
        let ends = ends(turn, config);
        if turn.finished {
            figures.finished += 1;
            match ends.iter().find(|&&e| e >= turn.speech_end) {
                Some(&end) if ends.len() == 1 => {
                    figures.latencies.push(((end - turn.speech_end) / 8) as u64)
                }
                _ => figures.finished_missed += 1,
            }
        } else {
            figures.unfinished += 1;
            // Ended before its last word: the turn was cut in two (in a
            // pause, or just after the caller went on, before the VAD
            // heard them again).
            let cut = ends.iter().any(|&e| e < turn.speech_end);
            if cut {
                figures.cut_ins += 1;
            }
        }
    }
    figures.latencies.sort_unstable();
    figures
}
